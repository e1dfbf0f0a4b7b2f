package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/difuse/difuse/client"
	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/node"
	"github.com/difuse/difuse/nodestatus"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/store"
	"github.com/difuse/difuse/store/badgerdb"
)

// startNode starts a node on loopback with ephemeral ports and stops it when
// the test ends.
func startNode(t *testing.T, dir, join string) *node.Node {
	t.Helper()
	return startWith(t, testConfig(dir, join))
}

// startWith starts a node of configuration cfg and stops it when the test
// ends.
func startWith(t *testing.T, cfg node.Config) *node.Node {
	t.Helper()
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	track(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	stoppers.Store(n, stop)
	t.Cleanup(stop)
	waitMember(t, n)
	return n
}

// stoppers maps each node startWith started to the function that stops it.
var stoppers sync.Map

// stopNode stops a node startWith started, before the test ends.
func stopNode(n *node.Node) {
	if stop, ok := stoppers.LoadAndDelete(n); ok {
		stop.(func())()
	}
}

// testConfig returns the configuration of a node on loopback with its data
// in dir, joining through the node at join (if not empty), which issues it
// a join token if a test started it (see track).
func testConfig(dir, join string) node.Config {
	cfg := node.Config{
		GRPCAddr:    "127.0.0.1:0",
		HTTPAddr:    "127.0.0.1:0",
		Join:        join,
		JoinTimeout: 5 * time.Second,
		Ring:        ring.Config{TickInterval: 20 * time.Millisecond},
		Store:       badgerdb.Options{Dir: dir, MinFreeBytes: -1},
	}
	if n, ok := started.Load(join); ok {
		tok, err := n.(*node.Node).Identity().NewToken(identity.RoleNode, time.Hour)
		if err != nil {
			panic(err)
		}
		cfg.Token = tok.String()
	}
	return cfg
}

// started maps the gRPC address of every node a test runs to it: a node
// joining through one gets its join token from it, a client its
// credentials.
var started sync.Map

// track notes that n runs, until the test ends.
func track(t *testing.T, n *node.Node) {
	started.Store(n.GRPCAddr(), n)
	started.Store(n.HTTPAddr(), n)
	t.Cleanup(func() {
		started.CompareAndDelete(n.GRPCAddr(), n)
		started.CompareAndDelete(n.HTTPAddr(), n)
	})
}

// web is the HTTP client of the tests: it shows the node a request goes
// to an admin token of its cluster.
var web = &http.Client{Transport: adminTransport{}}

// adminTransport adds an admin token of the cluster of the node a
// request goes to, if a test started it.
type adminTransport struct{}

func (adminTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if n, ok := started.Load(r.URL.Host); ok && r.Header.Get("Authorization") == "" {
		tok, err := n.(*node.Node).Identity().NewToken(identity.RoleAdmin, time.Hour)
		if err != nil {
			return nil, err
		}
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+tok.String())
	}
	return http.DefaultTransport.RoundTrip(r)
}

// creds returns the credentials of a client of the cluster of the node at
// addr, which a test started.
func creds(t *testing.T, addr string) credentials.TransportCredentials {
	t.Helper()
	n, ok := started.Load(addr)
	if !ok {
		t.Fatalf("no node the test started is at %s", addr)
	}
	member, err := n.(*node.Node).Identity().NewMember(identity.RoleClient, "test client")
	if err != nil {
		t.Fatal(err)
	}
	return credentials.NewTLS(member.ClientConfig())
}

// waitMember waits until the node's ring host is a member: joined, or,
// when joining keeps failing for the join timeout, alone in a ring of its
// own that the merge check then joins to the others.
func waitMember(t *testing.T, n *node.Node) {
	t.Helper()
	for i := 0; !n.Ring().Member(); i++ {
		if i > 1500 {
			t.Fatal("node never became a ring member")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dial(t *testing.T, addr string) *client.Conn {
	t.Helper()
	c, err := client.Dial(addr, creds(t, addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestUnaryAndStreamingOverLoopback(t *testing.T) {
	n := startNode(t, t.TempDir(), "")
	c := dial(t, n.GRPCAddr())

	info, err := c.Ping(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != n.ID() || info.GRPCAddr != n.GRPCAddr() {
		t.Fatalf("Ping = %+v, want node %s at %s", info, n.ID(), n.GRPCAddr())
	}

	var got []int
	err = c.PingStream(ctxT(t), 20, 64<<10, func(seq int, rtt time.Duration) { got = append(got, seq) })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 || got[19] != 19 {
		t.Fatalf("stream replies %v", got)
	}

	st, err := c.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Node.ID != n.ID() || st.RSSBytes <= 0 || st.DataDir == "" {
		t.Fatalf("Status = %+v", st)
	}
}

// rawCodec sends and receives bytes as they are, so a test can put any
// buffer on the wire.
type rawCodec struct{}

func (rawCodec) Name() string                    { return "flatbuffers" }
func (rawCodec) Marshal(v any) ([]byte, error)   { return v.([]byte), nil }
func (rawCodec) Unmarshal(b []byte, v any) error { *(v.(*[]byte)) = b; return nil }

func TestMalformedMessageToLiveServer(t *testing.T) {
	n := startNode(t, t.TempDir(), "")
	cc, err := grpc.NewClient(n.GRPCAddr(),
		grpc.WithTransportCredentials(creds(t, n.GRPCAddr())),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for name, buf := range map[string][]byte{
		"empty":     {},
		"short":     {1, 2},
		"bad root":  {0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0},
		"bad table": {8, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0xff, 0xff},
	} {
		for _, method := range []string{"/fb.Peer/Ping", "/fb.Client/Status"} {
			var out []byte
			err := cc.Invoke(ctxT(t), method, buf, &out)
			if err == nil || !strings.Contains(err.Error(), "malformed") {
				t.Errorf("%s to %s: err = %v, want a malformed-message error", name, method, err)
			}
		}
	}
	// The node is still up and answers well-formed calls.
	if _, err := dial(t, n.GRPCAddr()).Ping(ctxT(t)); err != nil {
		t.Fatalf("after malformed messages: %v", err)
	}
}

func TestHTTPStatus(t *testing.T) {
	n := startNode(t, t.TempDir(), "")
	resp, err := web.Get("http://" + n.HTTPAddr() + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var st nodestatus.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Node.ID != n.ID() || st.Node.HTTPAddr != n.HTTPAddr() {
		t.Fatalf("status = %+v", st)
	}
}

func TestRestartKeepsIdentity(t *testing.T) {
	dir := t.TempDir()
	n, err := node.New(testConfig(dir, ""))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.Run(ctx); err != nil {
		t.Fatal(err)
	}
	again := startNode(t, dir, "")
	if again.ID() != n.ID() {
		t.Fatalf("id changed across restart: %s then %s", n.ID(), again.ID())
	}
	// It came back at another address, which its certificate names now.
	if again.Identity().Name() != again.GRPCAddr() || again.Identity().CAHash() != n.Identity().CAHash() {
		t.Errorf("after a move to %s the certificate names %s", again.GRPCAddr(), again.Identity().Name())
	}
}

func TestSecondNodeOnSameDirectory(t *testing.T) {
	dir := t.TempDir()
	startNode(t, dir, "")
	_, err := node.New(testConfig(dir, ""))
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("err = %v, want ErrLocked", err)
	}
}

func TestJoin(t *testing.T) {
	first := startNode(t, t.TempDir(), "")
	second := startNode(t, t.TempDir(), first.GRPCAddr())
	if via := joinedVia(second); via != first.GRPCAddr() {
		t.Fatalf("joined via %q", via)
	}
	cfg := testConfig(filepath.Join(t.TempDir(), "d"), "127.0.0.1:1")
	cfg.Token = testConfig("", first.GRPCAddr()).Token
	cfg.JoinTimeout = 500 * time.Millisecond
	if _, err := node.New(cfg); !errors.Is(err, node.ErrJoin) {
		t.Fatalf("join of a dead address: err = %v, want ErrJoin", err)
	}
}

// A joiner keeps the members it learned through -j, and a later attempt
// joins through any of them when the -j node is down: a node whose -j node
// was killed again and again joined only after nine minutes in a Jepsen
// run.
func TestJoinThroughLearnedMembers(t *testing.T) {
	a := startNode(t, t.TempDir(), "")
	b := startNode(t, t.TempDir(), a.GRPCAddr())
	cdir := t.TempDir()
	stopNode(startNode(t, cdir, a.GRPCAddr()))
	learned, err := node.LearnedHosts(cdir)
	if err != nil || !slices.Contains(learned, a.GRPCAddr()) || !slices.Contains(learned, b.GRPCAddr()) {
		t.Fatalf("a node that joined through a learned %v (%v); want a and b", learned, err)
	}

	// d was admitted through a and learned of b, then a went down.
	ddir := t.TempDir()
	cfg := testConfig(ddir, a.GRPCAddr())
	tok, err := identity.ParseToken(cfg.Token)
	if err != nil {
		t.Fatal(err)
	}
	id, err := client.Admit(ctxT(t), []string{a.GRPCAddr()}, tok, "127.0.0.1:1", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := id.Save(ddir); err != nil {
		t.Fatal(err)
	}
	if err := node.SeedLearned(ddir, []string{b.GRPCAddr()}); err != nil {
		t.Fatal(err)
	}
	stopNode(a)
	d := startWith(t, cfg)
	if via := joinedVia(d); via != b.GRPCAddr() {
		t.Fatalf("joined via %q, want b (%s; a %s)", via, b.GRPCAddr(), a.GRPCAddr())
	}
}

// joinedVia returns the host n joined through, once its status says (the
// ring takes a node in just before its join returns).
func joinedVia(n *node.Node) string {
	for range 500 {
		if via := n.Status().JoinedVia; via != "" {
			return via
		}
		time.Sleep(10 * time.Millisecond)
	}
	return ""
}

func TestAddressInUse(t *testing.T) {
	n := startNode(t, t.TempDir(), "")
	cfg := testConfig(t.TempDir(), "")
	cfg.GRPCAddr = n.GRPCAddr()
	_, err := node.New(cfg)
	if !errors.Is(err, node.ErrListen) {
		t.Fatalf("err = %v, want ErrListen", err)
	}
}
