package node_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/node"
)

func TestBlocksOverHTTP(t *testing.T) {
	a := startNode(t, t.TempDir(), "")
	b := startNode(t, t.TempDir(), a.GRPCAddr())
	c := startNode(t, t.TempDir(), a.GRPCAddr())
	waitAgree(t, []*node.Node{a, b, c}, 16, 20*time.Second)

	data := strings.Repeat("block data ", 50000)
	code, tag, body := kvDo(t, a, "PUT", "/v1/blocks", []byte(data))
	var put struct {
		Hash string
		Size int
	}
	if err := json.Unmarshal([]byte(body), &put); code != 200 || err != nil || put.Size != len(data) || put.Hash != blockstore.Sum([]byte(data)).String() || tag != `"`+put.Hash+`"` {
		t.Fatalf("PUT /v1/blocks = %d %s %s", code, tag, body)
	}
	for _, n := range []*node.Node{a, b, c} {
		for _, lvl := range []string{"", "?consistency=all", "?consistency=lazy"} {
			if code, _, got := kvDo(t, n, "GET", "/v1/blocks/"+put.Hash+lvl, nil); code != 200 || got != data {
				t.Fatalf("GET%s via %s = %d, %d bytes", lvl, n.HTTPAddr(), code, len(got))
			}
		}
	}
	// The same bytes again are not stored again.
	if code, _, _ := kvDo(t, b, "PUT", "/v1/blocks?consistency=all", []byte(data)); code != 200 {
		t.Fatalf("second PUT = %d", code)
	}
	resp, err := web.Get("http://" + c.HTTPAddr() + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Blocks blockstore.Stats }
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if st.Blocks.Blocks != 1 || st.Blocks.StoredBytes != int64(len(data)) {
		t.Errorf("status of %s: %+v, want one block of %d bytes", c.HTTPAddr(), st.Blocks, len(data))
	}
	req, _ := http.NewRequest("HEAD", "http://"+b.HTTPAddr()+"/v1/blocks/"+put.Hash, nil)
	if resp, err := web.Do(req); err != nil || resp.StatusCode != 200 || resp.ContentLength != int64(len(data)) {
		t.Errorf("HEAD = %v, %v", resp, err)
	}
	for _, tc := range []struct {
		method, path string
		body         []byte
		want         int
	}{
		{"GET", "/v1/blocks/abc", nil, 400},
		{"GET", "/v1/blocks/" + blockstore.Sum([]byte("never")).String(), nil, 404},
		{"GET", "/v1/blocks/" + put.Hash + "?consistency=maybe", nil, 400},
		{"PUT", "/v1/blocks", make([]byte, blockstore.DefaultMaxChunk+1), 413},
	} {
		code, _, body := kvDo(t, a, tc.method, tc.path, tc.body)
		if code != tc.want || !strings.Contains(body, "error") {
			t.Errorf("%s %s = %d %s, want %d with a message", tc.method, tc.path, code, body, tc.want)
		}
	}
}

// A block stored through the API is pinned unless asked not to be; pins
// are read, added and removed at /v1/pins/{hash}.
func TestPinsOverHTTP(t *testing.T) {
	a := startNode(t, t.TempDir(), "")
	waitAgree(t, []*node.Node{a}, 8, 20*time.Second)
	pinned := func(hash string) int {
		code, _, _ := kvDo(t, a, "GET", "/v1/pins/"+hash, nil)
		return code
	}
	_, _, body := kvDo(t, a, "PUT", "/v1/blocks", []byte("pinned by default"))
	var put struct {
		Hash   string
		Pinned bool
	}
	if err := json.Unmarshal([]byte(body), &put); err != nil || !put.Pinned || pinned(put.Hash) != 200 {
		t.Fatalf("PUT /v1/blocks: %s, pin %d", body, pinned(put.Hash))
	}
	if code, _, _ := kvDo(t, a, "DELETE", "/v1/pins/"+put.Hash, nil); code != 204 || pinned(put.Hash) != 404 {
		t.Fatalf("DELETE /v1/pins: %d, then %d", code, pinned(put.Hash))
	}
	if code, _, _ := kvDo(t, a, "PUT", "/v1/pins/"+put.Hash, nil); code != 204 || pinned(put.Hash) != 200 {
		t.Fatalf("PUT /v1/pins of a stored block: %d, then %d", code, pinned(put.Hash))
	}
	_, _, body = kvDo(t, a, "PUT", "/v1/blocks?pin=false", []byte("not pinned"))
	if err := json.Unmarshal([]byte(body), &put); err != nil || put.Pinned || pinned(put.Hash) != 404 {
		t.Fatalf("PUT /v1/blocks?pin=false: %s, pin %d", body, pinned(put.Hash))
	}
	never := blockstore.Sum([]byte("never stored")).String()
	if code, _, _ := kvDo(t, a, "PUT", "/v1/pins/"+never, nil); code != 404 {
		t.Fatalf("PUT /v1/pins of a block never stored: %d, want 404", code)
	}
}
