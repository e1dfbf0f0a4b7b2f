package node_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/difuse/difuse/access"
	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/node"
)

// plainDo sends a request with the given bearer token (none if empty) and
// returns the status code and the WWW-Authenticate header.
func plainDo(t *testing.T, n *node.Node, method, path, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+n.HTTPAddr()+path, strings.NewReader("v"))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}

// Every HTTP request but the status page's files needs a token of the
// cluster: none, a forged one, one of another cluster, an expired or a
// revoked one get 401; a read token cannot write, a write token cannot
// reach the profiles (403); refusals are counted in /metrics.
func TestHTTPNeedsATokenOfTheRightRole(t *testing.T) {
	n := startNode(t, t.TempDir(), "")
	mint := func(id *identity.Identity, r identity.Role, ttl time.Duration) string {
		tok, err := id.NewToken(r, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return tok.String()
	}
	read, write, admin := mint(n.Identity(), identity.RoleRead, time.Hour), mint(n.Identity(), identity.RoleWrite, time.Hour), mint(n.Identity(), identity.RoleAdmin, 0)
	other, err := identity.Create("elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	forged := []byte(write)
	forged[12] ^= 1
	for _, tc := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/", "", 200},
		{"GET", "/ui/app.js", "", 200},
		{"GET", "/v1/status", "", 401},
		{"GET", "/metrics", "", 401},
		{"GET", "/v1/kv/a", "", 401},
		{"GET", "/debug/pprof/", "", 401},
		{"GET", "/v1/status", mint(other, identity.RoleAdmin, 0), 401},
		{"GET", "/v1/status", string(forged), 401},
		{"GET", "/v1/status", mint(n.Identity(), identity.RoleAdmin, time.Nanosecond), 401},
		{"GET", "/v1/status", read, 200},
		{"GET", "/metrics", read, 200},
		{"PUT", "/v1/kv/a", read, 403},
		{"DELETE", "/v1/fs/x", read, 403},
		{"PUT", "/v1/blocks", read, 403},
		{"PUT", "/v1/kv/a", write, 200},
		{"GET", "/v1/kv/a", write, 200},
		{"GET", "/debug/pprof/", write, 403},
		{"PUT", "/v1/kv/b", mint(n.Identity(), identity.RoleClient, time.Hour), 200},
		{"GET", "/debug/pprof/", admin, 200},
		{"PUT", "/v1/kv/c", admin, 200},
	} {
		code, challenge := plainDo(t, n, tc.method, tc.path, tc.token)
		if code != tc.want || (code == 401) != (challenge != "") {
			t.Errorf("%s %s with token %.20q: %d (WWW-Authenticate %q), want %d", tc.method, tc.path, tc.token, code, challenge, tc.want)
		}
	}
	// A revoked token is refused once the node has read the revocation.
	tok, _ := identity.ParseToken(write)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := access.Revoke(ctx, n.TxLog(), tok.IDString(), time.Now()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * node.AccessRefresh)
	for {
		code, _ := plainDo(t, n, "GET", "/v1/kv/a", write)
		if code == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a revoked token still gets %d after %s", code, 3*node.AccessRefresh)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, _ := plainDo(t, n, "GET", "/v1/kv/a", read); code != 200 {
		t.Errorf("another token after a revocation: %d", code)
	}
	_, _, metrics := kvDo(t, n, "GET", "/metrics", nil)
	for _, code := range []string{"Unauthorized", "Forbidden"} {
		if v := metricValue(t, metrics, `difuse_refused_requests_total{code="`+code+`",proto="http"}`); v < 1 {
			t.Errorf("refusals with %s counted: %v", code, v)
		}
	}
}

// With OpenStatus the status and the metrics need no token; nothing else
// opens.
func TestOpenStatus(t *testing.T) {
	cfg := testConfig(t.TempDir(), "")
	cfg.OpenStatus = true
	n := startWith(t, cfg)
	for path, want := range map[string]int{"/v1/status": 200, "/v1/cluster": 200, "/metrics": 200, "/v1/kv/a": 401, "/debug/pprof/": 401, "/v1/lookup?key=a": 401} {
		if code, _ := plainDo(t, n, "GET", path, ""); code != want {
			t.Errorf("GET %s without a token: %d, want %d", path, code, want)
		}
	}
}
