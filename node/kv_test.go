package node_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/node"
	"github.com/difuse/difuse/txlog"
)

// kvDo sends an HTTP request to a node's key-value API and returns the
// status, the ETag and the body.
func kvDo(t *testing.T, n *node.Node, method, path string, body []byte, header ...string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+n.HTTPAddr()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := web.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("ETag"), string(b)
}

func TestKVOverHTTP(t *testing.T) {
	a := startNode(t, t.TempDir(), "")
	b := startNode(t, t.TempDir(), a.GRPCAddr())
	c := startNode(t, t.TempDir(), a.GRPCAddr())
	waitAgree(t, []*node.Node{a, b, c}, 16, 20*time.Second)

	code, tag1, body := kvDo(t, a, "PUT", "/v1/kv/dir/key", []byte("one"))
	if code != 200 || tag1 == "" {
		t.Fatalf("PUT = %d %s %s", code, tag1, body)
	}
	for _, n := range []*node.Node{a, b, c} {
		for _, lvl := range []string{"", "?consistency=quorum", "?consistency=all", "?consistency=leader"} {
			code, tag, body := kvDo(t, n, "GET", "/v1/kv/dir/key"+lvl, nil)
			if code != 200 || body != "one" || tag != tag1 {
				t.Fatalf("GET%s via %s = %d %s %q", lvl, n.HTTPAddr(), code, tag, body)
			}
		}
	}
	// Compare-and-set on the ETag.
	if code, _, body := kvDo(t, b, "PUT", "/v1/kv/dir/key", []byte("x"), "If-None-Match", "*"); code != 412 {
		t.Errorf("create-only PUT of an existing key = %d %s", code, body)
	}
	code, tag2, _ := kvDo(t, b, "PUT", "/v1/kv/dir/key", []byte("two"), "If-Match", tag1)
	if code != 200 || tag2 == tag1 {
		t.Fatalf("PUT If-Match the current ETag = %d %s", code, tag2)
	}
	if code, _, body := kvDo(t, c, "PUT", "/v1/kv/dir/key", []byte("lost"), "If-Match", tag1); code != 412 {
		t.Errorf("PUT If-Match a stale ETag = %d %s", code, body)
	}
	if code, _, _ := kvDo(t, c, "DELETE", "/v1/kv/dir/key", nil, "If-Match", tag1); code != 412 {
		t.Errorf("DELETE If-Match a stale ETag = %d", code)
	}
	if code, _, body := kvDo(t, c, "DELETE", "/v1/kv/dir/key?consistency=all", nil, "If-Match", tag2); code != 200 {
		t.Fatalf("DELETE = %d %s", code, body)
	}
	if code, _, _ := kvDo(t, a, "GET", "/v1/kv/dir/key?consistency=quorum", nil); code != 404 {
		t.Errorf("GET of a deleted key = %d", code)
	}
	if code, _, _ := kvDo(t, a, "DELETE", "/v1/kv/dir/key", nil); code != 404 {
		t.Errorf("DELETE of a deleted key = %d", code)
	}
	// History: set, set, delete, chained.
	code, _, body = kvDo(t, b, "GET", "/v1/kv/dir/key?history=1", nil)
	var hist []struct {
		Height uint64
		Hash   string
		Op     string
		Value  []byte
	}
	if err := json.Unmarshal([]byte(body), &hist); code != 200 || err != nil || len(hist) != 3 {
		t.Fatalf("history = %d %s (%v)", code, body, err)
	}
	if hist[0].Op != "set" || string(hist[0].Value) != "one" || `"`+hist[0].Hash+`"` != tag1 || hist[1].Op != "set" || hist[2].Op != "delete" {
		t.Errorf("history = %+v", hist)
	}
	if code, _, _ := kvDo(t, b, "GET", "/v1/kv/never?history=1", nil); code != 404 {
		t.Errorf("history of a key never written = %d", code)
	}

	// Bad input gets a 4xx with a message.
	for _, tc := range []struct {
		method, path string
		body         []byte
		header       []string
		want         int
	}{
		{"GET", "/v1/kv/k?consistency=sometimes", nil, nil, 400},
		{"PUT", "/v1/kv/k?consistency=lazy", []byte("v"), nil, 400},
		{"PUT", "/v1/kv/k", make([]byte, 1<<20+1), nil, 413},
		{"GET", "/v1/kv/", nil, nil, 400},
		{"GET", "/v1/kv/%ff", nil, nil, 400},
		{"GET", "/v1/kv/" + strings.Repeat("k", 2000), nil, nil, 400},
		{"PUT", "/v1/kv/k", []byte("v"), []string{"If-Match", `"abc"`}, 400},
		{"PUT", "/v1/kv/k", []byte("v"), []string{"If-None-Match", `"abc"`}, 400},
	} {
		code, _, body := kvDo(t, a, tc.method, tc.path, tc.body, tc.header...)
		var msg struct{ Error string }
		json.Unmarshal([]byte(body), &msg)
		if code != tc.want || msg.Error == "" {
			t.Errorf("%s %.40s: %d %q, want %d with a message", tc.method, tc.path, code, body, tc.want)
		}
	}
	// The largest value allowed goes through.
	if code, _, body := kvDo(t, a, "PUT", "/v1/kv/big", make([]byte, 1<<20)); code != 200 {
		t.Errorf("PUT of 1 MiB = %d %s", code, body)
	}
}

func TestKVOverGRPC(t *testing.T) {
	a := startNode(t, t.TempDir(), "")
	b := startNode(t, t.TempDir(), a.GRPCAddr())
	waitAgree(t, []*node.Node{a, b}, 16, 20*time.Second)
	ca, cb := dial(t, a.GRPCAddr()), dial(t, b.GRPCAddr())
	ctx := ctxT(t)
	var zero txlog.Hash
	ref, err := ca.Put(ctx, "g", []byte("v1"), level.Quorum, &zero)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := cb.Get(ctx, "g", level.Quorum)
	if err != nil || string(rec.Value) != "v1" || rec.Hash != ref.Hash {
		t.Fatalf("Get = %+v, %v", rec, err)
	}
	if _, err := cb.Put(ctx, "g", []byte("v2"), level.Quorum, &zero); !errors.Is(err, txlog.ErrConflict) {
		t.Errorf("create-only Put of an existing key: %v, want ErrConflict", err)
	}
	if _, err := cb.Delete(ctx, "g", level.Quorum, &ref.Hash); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Get(ctx, "g", level.Leader); !errors.Is(err, txlog.ErrNotFound) {
		t.Errorf("Get of a deleted key: %v, want ErrNotFound", err)
	}
	if h, err := ca.History(ctx, "g"); err != nil || len(h) != 2 {
		t.Errorf("History = %d entries, %v", len(h), err)
	}
	if _, err := ca.Put(ctx, "", []byte("v"), level.Quorum, nil); !errors.Is(err, txlog.ErrBadRequest) {
		t.Errorf("Put of the empty key: %v, want ErrBadRequest", err)
	}
	if _, err := ca.Txn(ctx, txlog.Request{Partition: "kv/p", Kind: txlog.KindWrite, Level: level.Lazy, Write: []txlog.Change{{Name: "a"}}}); !errors.Is(err, txlog.ErrBadRequest) {
		t.Errorf("a lazy write: %v, want ErrBadRequest", err)
	}
}

// A write at level all on a cluster with fewer hosts than N takes effect,
// and the 503 says so.
func TestKVCommittedShort(t *testing.T) {
	a := startNode(t, t.TempDir(), "")
	req, _ := http.NewRequest(http.MethodPut, "http://"+a.HTTPAddr()+"/v1/kv/short?consistency=all", strings.NewReader("v"))
	resp, err := web.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Difuse-Committed") != "true" {
		t.Errorf("PUT at all on one host = %d, Difuse-Committed %q", resp.StatusCode, resp.Header.Get("Difuse-Committed"))
	}
	if code, _, body := kvDo(t, a, "GET", "/v1/kv/short?consistency=quorum", nil); code != 200 || body != "v" {
		t.Errorf("GET after it = %d %q", code, body)
	}
}

// A PUT retried with the same Idempotency-Key is applied once: the retry
// gets the first attempt's transaction, even after another write.
func TestKVIdempotencyKey(t *testing.T) {
	n := startNode(t, t.TempDir(), "")
	code, tag1, body := kvDo(t, n, "PUT", "/v1/kv/idem", []byte("first"), "Idempotency-Key", "req-1")
	if code != 200 {
		t.Fatalf("PUT = %d %s", code, body)
	}
	if code, _, body := kvDo(t, n, "PUT", "/v1/kv/idem", []byte("second")); code != 200 {
		t.Fatalf("PUT = %d %s", code, body)
	}
	code, tag, _ := kvDo(t, n, "PUT", "/v1/kv/idem", []byte("first"), "Idempotency-Key", "req-1")
	if code != 200 || tag != tag1 {
		t.Fatalf("retry = %d, ETag %s, want the first attempt's %s", code, tag, tag1)
	}
	if _, _, got := kvDo(t, n, "GET", "/v1/kv/idem?consistency=quorum", nil); got != "second" {
		t.Fatalf("GET = %q: the retry was applied again", got)
	}
	if code, tag, _ := kvDo(t, n, "PUT", "/v1/kv/idem", []byte("third"), "Idempotency-Key", "req-2"); code != 200 || tag == tag1 {
		t.Fatalf("a new key = %d %s", code, tag)
	}
}
