package node_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/difuse/difuse/node"
)

func TestFSOverHTTP(t *testing.T) {
	a := startNode(t, t.TempDir(), "")
	b := startNode(t, t.TempDir(), a.GRPCAddr())
	c := startNode(t, t.TempDir(), a.GRPCAddr())
	waitAgree(t, []*node.Node{a, b, c}, 16, 20*time.Second)

	if code, _, body := kvDo(t, a, "PUT", "/v1/fs/docs/", nil); code != 201 {
		t.Fatalf("mkdir = %d %s", code, body)
	}
	if code, _, body := kvDo(t, b, "PUT", "/v1/fs/docs/a.txt", []byte("hello")); code != 200 {
		t.Fatalf("PUT a.txt = %d %s", code, body)
	}
	if code, _, body := kvDo(t, c, "GET", "/v1/fs/docs/a.txt", nil); code != 200 || body != "hello" {
		t.Fatalf("GET a.txt = %d %q", code, body)
	}
	big := bytes.Repeat([]byte("difuse "), 3<<20)
	if code, _, body := kvDo(t, a, "PUT", "/v1/fs/docs/big", big); code != 200 {
		t.Fatalf("PUT big = %d %s", code, body)
	}
	if code, _, body := kvDo(t, b, "GET", "/v1/fs/docs/big", nil); code != 200 || body != string(big) {
		t.Fatalf("GET big = %d, %d bytes", code, len(body))
	}
	if code, _, body := kvDo(t, a, "PUT", "/v1/fs/docs/big", []byte("small now")); code != 200 {
		t.Fatalf("overwrite = %d %s", code, body)
	}
	if _, _, body := kvDo(t, c, "GET", "/v1/fs/docs/big", nil); body != "small now" {
		t.Errorf("after the overwrite: %d bytes", len(body))
	}
	code, _, body := kvDo(t, c, "GET", "/v1/fs/docs", nil)
	var list []struct{ Name, Type string }
	if err := json.Unmarshal([]byte(body), &list); code != 200 || err != nil || len(list) != 2 || list[0].Name != "a.txt" || list[1].Type != "file" {
		t.Fatalf("listing = %d %s", code, body)
	}
	if code, _, body := kvDo(t, a, "GET", "/v1/fs/", nil); code != 200 || !bytes.Contains([]byte(body), []byte(`"docs"`)) {
		t.Errorf("root listing = %d %s", code, body)
	}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/v1/fs/nothing", 404},
		{"PUT", "/v1/fs/no/such/dir/file", 404},
		{"DELETE", "/v1/fs/docs", 409},
		{"GET", "/v1/fs/docs/a.txt/x", 400},
		{"DELETE", "/v1/fs/", 400},
	} {
		if code, _, body := kvDo(t, b, tc.method, tc.path, []byte("x")); code != tc.want {
			t.Errorf("%s %s = %d %s, want %d", tc.method, tc.path, code, body, tc.want)
		}
	}
	for _, p := range []string{"/v1/fs/docs/a.txt", "/v1/fs/docs/big", "/v1/fs/docs"} {
		if code, _, body := kvDo(t, a, "DELETE", p, nil); code != 204 {
			t.Errorf("DELETE %s = %d %s", p, code, body)
		}
	}
	if code, _, _ := kvDo(t, c, "GET", "/v1/fs/docs", nil); code != 404 {
		t.Errorf("GET of a removed directory = %d", code)
	}
}
