package node_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/access"
	"github.com/difuse/difuse/client"
	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/node"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/ring/ringrpc"
	"github.com/difuse/difuse/txlog"
	"github.com/difuse/difuse/wire"
)

// The first node writes a join token that admits nodes; a node without a
// token, or with one that is forged, expired, of another cluster or
// admitting a client, cannot join, and the ring stays as it was.
func TestJoinNeedsAValidToken(t *testing.T) {
	first := startNode(t, t.TempDir(), "")
	b, err := os.ReadFile(filepath.Join(first.Status().DataDir, identity.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(first.Status().DataDir, identity.TokenFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("the join token file has mode %v", st.Mode().Perm())
	}
	written, err := identity.ParseToken(string(b))
	if err != nil || first.Identity().CheckToken(written, time.Now()) != nil {
		t.Fatalf("the written join token: %v", err)
	}
	other, err := identity.Create("elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	id := first.Identity()
	expired, _ := id.NewToken(identity.RoleNode, time.Second)
	client, _ := id.NewToken(identity.RoleClient, time.Hour)
	foreign, _ := other.NewToken(identity.RoleNode, time.Hour)
	forged := foreign
	forged.CAHash = id.CAHash()
	readOnly, _ := id.NewToken(identity.RoleRead, time.Hour)
	revoked, _ := id.NewToken(identity.RoleNode, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := access.Revoke(ctx, first.TxLog(), revoked.IDString(), time.Now()); err != nil {
		t.Fatal(err)
	}
	// The revocation has reached the node once its HTTP interface refuses
	// the token too.
	for end := time.Now().Add(3 * node.AccessRefresh); ; time.Sleep(100 * time.Millisecond) {
		if code, _ := plainDo(t, first, "GET", "/v1/status", revoked.String()); code == 401 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the node did not take in the revocation")
		}
	}
	time.Sleep(2 * time.Second) // expired expires
	for name, tok := range map[string]string{
		"no token": "", "garbage": "difuse1.abc.def", "expired": expired.String(), "a client's": client.String(),
		"another cluster's": foreign.String(), "forged": forged.String(), "a revoked": revoked.String(), "a read": readOnly.String(),
	} {
		cfg := testConfig(t.TempDir(), first.GRPCAddr())
		cfg.Token, cfg.JoinTimeout = tok, 2*time.Second
		if _, err := node.New(cfg); !errors.Is(err, node.ErrJoin) {
			t.Fatalf("%s: err = %v, want ErrJoin", name, err)
		}
	}
	if hosts := first.Ring().KnownHosts(); len(hosts) != 0 {
		t.Errorf("the ring grew to %v", hosts)
	}
	second := startNode(t, t.TempDir(), first.GRPCAddr())
	waitAgree(t, []*node.Node{first, second}, 100, 20*time.Second)
}

// emptyTable is a message every request table of the schema decodes from.
func emptyTable() []byte {
	b := flatbuffers.NewBuilder(16)
	b.StartObject(0)
	b.Finish(b.EndObject())
	return b.FinishedBytes()
}

// Each role reaches only its services: a mount's certificate cannot sweep,
// delete blocks, make a node leave, replicate or enter the ring; a caller
// without a certificate reaches nothing but the join service; a plain
// connection nothing at all.
func TestRolesAreEnforced(t *testing.T) {
	n := startNode(t, t.TempDir(), "")
	conn := func(creds credentials.TransportCredentials) *grpc.ClientConn {
		cc, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(creds), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	call := func(cc *grpc.ClientConn, method string) error {
		var out []byte
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return cc.Invoke(ctx, method, emptyTable(), &out)
	}
	nodeOnly := []string{"/fb.GC/Sweep", "/fb.Blocks/Delete", "/fb.Heal/Leave", "/fb.TxLog/Append", "/fb.TxLog/Prepare", "/fb.Ring/Rectify", "/fb.Heal/Items"}
	mount := conn(creds(t, n.GRPCAddr()))
	for _, m := range nodeOnly {
		if err := call(mount, m); status.Code(err) != codes.PermissionDenied {
			t.Errorf("a mount calls %s: %v, want PermissionDenied", m, err)
		}
	}
	if err := call(mount, "/fb.Client/Status"); err != nil {
		t.Errorf("a mount asks for the status: %v", err)
	}
	// A mount's transactions reach the filesystem's and the key-value
	// store's partitions, not the cluster's own.
	c, err := client.DialCluster(ctxT(t), []string{n.GRPCAddr()}, creds(t, n.GRPCAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, part := range []string{access.Partition, "gc/lease", "pins/00"} {
		_, err := c.Do(ctxT(t), txlog.Request{Partition: part, Level: level.Quorum, Kind: txlog.KindWrite, Write: []txlog.Change{{Name: "x", Value: []byte("y")}}})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("a mount writes to %s: %v, want PermissionDenied", part, err)
		}
	}
	if _, err := c.Do(ctxT(t), txlog.Request{Partition: "kv/x", Level: level.Quorum, Kind: txlog.KindWrite, Write: []txlog.Change{{Name: "x", Value: []byte("y")}}}); err != nil {
		t.Errorf("a mount writes a key: %v", err)
	}
	stranger := conn(credentials.NewTLS(identity.PinnedConfig(n.Identity().CAHash())))
	for _, m := range append(nodeOnly, "/fb.Client/Status", "/fb.Peer/Ping") {
		if err := call(stranger, m); status.Code(err) != codes.Unauthenticated {
			t.Errorf("a caller without a certificate calls %s: %v, want Unauthenticated", m, err)
		}
	}
	if err := call(conn(insecure.NewCredentials()), "/fb.Peer/Ping"); status.Code(err) != codes.Unavailable {
		t.Errorf("a plain connection: %v", err)
	}
	// Another cluster's node is a stranger too: its certificate fails the
	// handshake.
	other, _ := identity.Create("elsewhere")
	if err := call(conn(credentials.NewTLS(other.ClientConfig())), "/fb.Peer/Ping"); err == nil {
		t.Error("a node of another cluster was answered")
	}
}

// A member that is removed (one of three nodes, gone for good) is refused
// at the handshake by every node once they read the removal, which they
// keep in their data directories; a certificate issued to its name again
// later through the join service is let in.
func TestRemovedMemberIsShutOut(t *testing.T) {
	a := startNode(t, t.TempDir(), "")
	startNode(t, t.TempDir(), a.GRPCAddr())
	b := startNode(t, t.TempDir(), a.GRPCAddr())
	ping := func(id *identity.Identity) error {
		cc, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(id.ClientConfig())), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		var out []byte
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return cc.Invoke(ctx, "/fb.Peer/Ping", emptyTable(), &out)
	}
	eventually := func(what string, ok func() bool) {
		t.Helper()
		for end := time.Now().Add(3 * node.AccessRefresh); !ok(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("not within %s: %s", 3*node.AccessRefresh, what)
			}
		}
	}
	if err := ping(b.Identity()); err != nil {
		t.Fatalf("a member's ping: %v", err)
	}
	// The machine is gone for good (what difused remove is for); someone
	// holds its certificate.
	stopNode(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := access.Remove(ctx, a.TxLog(), b.Identity().Name(), time.Now()); err != nil {
		t.Fatal(err)
	}
	eventually("the removed member is refused", func() bool { return ping(b.Identity()) != nil })
	saved, err := os.ReadFile(filepath.Join(a.Status().DataDir, "access.json"))
	if err != nil || !strings.Contains(string(saved), b.Identity().Name()) {
		t.Errorf("the node's copy of the access record: %q, %v", saved, err)
	}
	// Admitted again under the same name, with a new certificate.
	tok, err := a.Identity().NewToken(identity.RoleNode, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	again, err := client.Admit(ctx, []string{a.GRPCAddr()}, tok, b.Identity().Name(), false)
	if err != nil {
		t.Fatal(err)
	}
	eventually("the member admitted again gets in", func() bool { return ping(again) == nil })
	if err := ping(b.Identity()); err == nil {
		t.Error("the removed certificate got in again with the new one")
	}
}

// A node offers only its own vnodes as a predecessor: an id that is not
// one of its address's, or a vnode of another node's address, is refused,
// so a member cannot enter the ring where it chooses.
func TestRectifyTakesOnlyTheCallersVNodes(t *testing.T) {
	a := startNode(t, t.TempDir(), "")
	b := startNode(t, t.TempDir(), a.GRPCAddr())
	pool := wire.NewPool(credentials.NewTLS(b.Identity().ClientConfig()))
	defer pool.Close()
	tr := ringrpc.NewTransport(pool)
	to := ring.Ref{ID: ring.VNodeID(a.GRPCAddr(), 0), Addr: a.GRPCAddr()}
	for _, tc := range []struct {
		from ring.Ref
		want codes.Code
	}{
		{ring.Ref{ID: ring.HashKey([]byte("anywhere")), Addr: b.GRPCAddr()}, codes.InvalidArgument},
		{ring.Ref{ID: ring.VNodeID("127.0.0.1:1", 3), Addr: "127.0.0.1:1"}, codes.PermissionDenied},
		{ring.Ref{ID: ring.VNodeID(b.GRPCAddr(), 1), Addr: b.GRPCAddr()}, codes.OK},
	} {
		if err := tr.Rectify(ctxT(t), to, tc.from); status.Code(err) != tc.want {
			t.Errorf("rectify from %v: %v, want %s", tc.from, err, tc.want)
		}
	}
}
