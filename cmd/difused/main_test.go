package main

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/difuse/difuse/client"
	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/internal/cli"
	"github.com/difuse/difuse/internal/proctest"
	"github.com/difuse/difuse/node"
	"github.com/difuse/difuse/nodestatus"
)

var serving = regexp.MustCompile(`msg="node serving" id=(\w+) grpc=(\S+) http=(\S+)`)

func startDaemon(t *testing.T, dir string, extra ...string) (*proctest.Proc, []string) {
	t.Helper()
	args := append([]string{"-b", "127.0.0.1:0", "-a", "127.0.0.1:0", "-d", dir, "-join-timeout", "3s"}, extra...)
	p := proctest.Start(t, "difused", args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := p.WaitLog(ctx, serving)
	if err != nil {
		t.Fatal(err)
	}
	proctest.NoteNode(t, m[2], m[3], dir, args)
	return p, m
}

// The daemon serves status over HTTP, stops cleanly on SIGTERM and SIGINT,
// and comes back with the same identity on the same directory.
func TestServeStopRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	p, m := startDaemon(t, dir)
	resp, err := proctest.HTTP.Get("http://" + m[3] + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	var st nodestatus.Status
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || st.Node.ID != m[1] {
		t.Fatalf("status %+v, %v", st, err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		if err := p.Signal(sig); err != nil {
			t.Fatal(err)
		}
		if code, err := p.Wait(30 * time.Second); err != nil || code != 0 {
			t.Fatalf("after %v: exit %d, %v\n%s", sig, code, err, p.Log())
		}
		if !strings.Contains(p.Log(), `msg="node stopped"`) {
			t.Fatalf("no clean stop logged:\n%s", p.Log())
		}
		var again []string
		p, again = startDaemon(t, dir)
		if again[1] != m[1] {
			t.Fatalf("identity changed across restart: %s then %s", m[1], again[1])
		}
	}
}

func TestExitCodes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "held")
	_, m := startDaemon(t, dir)
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"bad flag", []string{"-nope"}, cli.ExitUsage, "flag provided but not defined"},
		{"locked", []string{"-b", "127.0.0.1:0", "-a", "127.0.0.1:0", "-d", dir}, cli.ExitDataDir, "in use by another process"},
		{"missing parent", []string{"-b", "127.0.0.1:0", "-a", "127.0.0.1:0", "-d", "/nonexistent/difuse/x"}, cli.ExitDataDir, "does not exist"},
		{"address in use", []string{"-b", m[2], "-a", "127.0.0.1:0", "-d", t.TempDir()}, cli.ExitListen, "address already in use"},
		{"even replicas", []string{"-b", "127.0.0.1:0", "-a", "127.0.0.1:0", "-d", t.TempDir(), "-replicas", "4"}, cli.ExitUsage, "must be odd"},
		{"negative scrub", []string{"-b", "127.0.0.1:0", "-a", "127.0.0.1:0", "-d", t.TempDir(), "-scrub-mib", "-1"}, cli.ExitUsage, "ScrubBytes"},
		{"short retention", []string{"-b", "127.0.0.1:0", "-a", "127.0.0.1:0", "-d", t.TempDir(), "-log-keep-for", "10s"}, cli.ExitUsage, "at least 30s"},
		{"join unreachable", []string{"-b", "127.0.0.1:0", "-a", "127.0.0.1:0", "-d", t.TempDir(), "-j", "127.0.0.1:1"}, cli.ExitJoin, "cannot join"},
	}
	for _, c := range cases {
		p := proctest.Start(t, "difused", c.args...)
		code, err := p.Wait(60 * time.Second)
		if err != nil || code != c.code || !strings.Contains(p.Log(), c.msg) {
			t.Errorf("%s: exit %d (%v), want %d with %q in:\n%s", c.name, code, err, c.code, c.msg, p.Log())
		}
	}
}

func TestClientSubcommands(t *testing.T) {
	dir := t.TempDir()
	_, m := startDaemon(t, dir)
	var out, errb strings.Builder
	if code := run([]string{"status", "-d", dir, "-b", m[2]}, &out, &errb); code != 0 {
		t.Fatalf("status: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), m[1]) {
		t.Fatalf("status output lacks the node id:\n%s", out.String())
	}
	out.Reset()
	if code := run([]string{"ping", "-d", dir, "-n", "3", "-size", "1000", m[2]}, &out, &errb); code != 0 {
		t.Fatalf("ping: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "3 pings: min") {
		t.Fatalf("ping output:\n%s", out.String())
	}
	if code := run([]string{"status", "-d", dir, "-b", "127.0.0.1:1", "-timeout", "300ms"}, &out, &errb); code != cli.ExitFailure {
		t.Fatalf("status of a dead node: exit %d", code)
	}
}

// difused status sums up the cluster: its nodes, up or down, and a line
// for each; then the node asked.
func TestStatusSummary(t *testing.T) {
	dir := t.TempDir()
	_, m0 := startDaemon(t, dir)
	_, m1 := startDaemon(t, t.TempDir(), "-j", m0[2])
	p2, m2 := startDaemon(t, t.TempDir(), "-j", m1[2], "-heal-grace", "10m")
	grpcs := []string{m0[2], m1[2], m2[2]}
	waitAllAgree(t, []string{m0[3], m1[3], m2[3]}, grpcs, 100, 30*time.Second)
	status := func() string {
		var out, errb strings.Builder
		if code := run([]string{"status", "-d", dir, "-b", m1[2]}, &out, &errb); code != 0 {
			t.Fatalf("status: exit %d: %s", code, errb.String())
		}
		return out.String()
	}
	row := func(out, addr, state string) bool {
		return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(addr) + ` +` + state + `\b`).MatchString(out)
	}
	out := status()
	if !strings.HasPrefix(out, "cluster     3 nodes, 3 up; 24 vnodes; 3 copies of every key\n") {
		t.Errorf("summary line:\n%s", out)
	}
	for _, g := range grpcs {
		if !row(out, g, "up") {
			t.Errorf("no row of %s up:\n%s", g, out)
		}
	}
	if !strings.Contains(out, "the node asked, "+m1[2]+":\nnode        "+m1[1]) {
		t.Errorf("no details of the node asked:\n%s", out)
	}

	if err := p2.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p2.Wait(10 * time.Second)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		out = status()
		if strings.HasPrefix(out, "cluster     3 nodes, 2 up") && row(out, m2[2], "down") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after a kill -9, status does not show the node down:\n%s", out)
		}
	}
}

// difused token create makes a token with the CA key of the node on the
// machine: a node token admits a second node, and the token is refused
// once it expires.
func TestTokenCreate(t *testing.T) {
	dir := t.TempDir()
	_, m0 := startDaemon(t, dir)
	create := func(args ...string) string {
		t.Helper()
		var out, errb strings.Builder
		if code := run(append([]string{"token", "create", "-d", dir, "-b", m0[2]}, args...), &out, &errb); code != 0 {
			t.Fatalf("token create %v: exit %d: %s", args, code, errb.String())
		}
		return strings.TrimSpace(out.String())
	}
	nodeTok := create("-role", "node", "-ttl", "1h")
	id, err := identity.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tok  string
		role identity.Role
	}{{nodeTok, identity.RoleNode}, {create(), identity.RoleClient}} {
		tok, err := identity.ParseToken(tc.tok)
		if err != nil || tok.Role != tc.role || id.CheckToken(tok, time.Now()) != nil || id.CheckToken(tok, time.Now().Add(25*time.Hour)) == nil {
			t.Errorf("token %q: %+v, %v", tc.tok, tok, err)
		}
	}
	_, m1 := startDaemon(t, t.TempDir(), "-j", m0[2], "-token", nodeTok)
	waitAllAgree(t, []string{m0[3], m1[3]}, []string{m0[2], m1[2]}, 50, 30*time.Second)
	var out, errb strings.Builder
	if code := run([]string{"token", "create", "-d", dir, "-b", m0[2], "-role", "king"}, &out, &errb); code != cli.ExitUsage {
		t.Errorf("an unknown role: exit %d", code)
	}

	// An HTTP token, listed, then revoked: refused from then on.
	readTok := create("-role", "read", "-note", "for the dashboard")
	httpGet := func() int {
		req, _ := http.NewRequest("GET", "http://"+m0[3]+"/v1/status", nil)
		req.Header.Set("Authorization", "Bearer "+readTok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := httpGet(); code != 200 {
		t.Fatalf("a read token: %d", code)
	}
	parsed, _ := identity.ParseToken(readTok)
	list := func() string {
		t.Helper()
		var out, errb strings.Builder
		if code := run([]string{"token", "list", "-d", dir, "-b", m0[2]}, &out, &errb); code != 0 {
			t.Fatalf("token list: exit %d: %s", code, errb.String())
		}
		return out.String()
	}
	if l := list(); !regexp.MustCompile(parsed.IDString() + `\s+read\s.*valid\s+for the dashboard`).MatchString(l) {
		t.Errorf("token list:\n%s", l)
	}
	out.Reset()
	if code := run([]string{"token", "revoke", "-d", dir, "-b", m0[2], parsed.IDString()}, &out, &errb); code != 0 {
		t.Fatalf("token revoke: exit %d: %s", code, errb.String())
	}
	if l := list(); !regexp.MustCompile(parsed.IDString() + `\s+read\s.*revoked`).MatchString(l) {
		t.Errorf("token list after the revocation:\n%s", l)
	}
	for end := time.Now().Add(3 * node.AccessRefresh); httpGet() != 401; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the revoked token is still taken")
		}
	}
}

// difused remove refuses a node that still answers; once it is gone,
// removes it, and the machine restarted on its old files does not get
// back into the ring.
func TestRemove(t *testing.T) {
	dir := t.TempDir()
	_, m0 := startDaemon(t, dir)
	_, m1 := startDaemon(t, t.TempDir(), "-j", m0[2])
	dir2 := t.TempDir()
	p2, m2 := startDaemon(t, dir2, "-j", m0[2])
	waitAllAgree(t, []string{m0[3], m1[3], m2[3]}, []string{m0[2], m1[2], m2[2]}, 50, 30*time.Second)
	remove := func() (int, string) {
		var out, errb strings.Builder
		code := run([]string{"remove", "-d", dir, "-b", m0[2], "-timeout", "20s", m2[2]}, &out, &errb)
		return code, out.String() + errb.String()
	}
	if code, out := remove(); code != cli.ExitFailure || !strings.Contains(out, "answers") {
		t.Errorf("remove of a node that answers: exit %d: %s", code, out)
	}
	if err := p2.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p2.Wait(10 * time.Second)
	if code, out := remove(); code != 0 {
		t.Fatalf("remove: exit %d: %s", code, out)
	}
	waitAllAgree(t, []string{m0[3], m1[3]}, []string{m0[2], m1[2]}, 50, 60*time.Second)
	// Both nodes refuse the removed certificate once they read the removal.
	old, err := identity.Load(dir2)
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{m0[2], m1[2]} {
		for end := time.Now().Add(3 * node.AccessRefresh); ; time.Sleep(100 * time.Millisecond) {
			c, err := client.Dial(addr, credentials.NewTLS(old.ClientConfig()))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err = c.Ping(ctx)
			cancel()
			c.Close()
			if err != nil {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("%s still takes the removed node's certificate", addr)
			}
		}
	}
	// The machine comes back on its old files and address: refused.
	back := proctest.Start(t, "difused", "-b", m2[2], "-a", "127.0.0.1:0", "-d", dir2)
	time.Sleep(2 * node.AccessRefresh)
	if err := allAgree([]string{m0[3], m1[3]}, []string{m0[2], m1[2]}, 50); err != nil {
		log := strings.Split(back.Log(), "\n")
		t.Errorf("after the removed node came back: %v\nits log ends:\n%s", err, strings.Join(log[max(0, len(log)-10):], "\n"))
	}
}
