package client

import (
	"testing"
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/ring"
)

func TestCapacity(t *testing.T) {
	node := func(stored, lsm, free int64) Status {
		return Status{Replicas: 3, Blocks: blockstore.Stats{StoredBytes: stored}, Store: StoreStats{LSMBytes: lsm, FreeBytes: free}}
	}
	used, free := Capacity([]Status{node(300, 30, 3000), node(300, 30, 3000), node(300, 30, 3000)})
	if used != 330 || free != 3000 {
		t.Errorf("3 nodes, 3 copies: used %d, free %d; want 330 and 3000", used, free)
	}
	// One node alone keeps one copy, whatever N is.
	if used, free := Capacity([]Status{node(100, 0, 500)}); used != 100 || free != 500 {
		t.Errorf("one node: used %d, free %d", used, free)
	}
}

// A request goes first to the node whose vnode follows its key on the
// ring, unless that node failed lately.
func TestLeader(t *testing.T) {
	c := &Cluster{done: make(chan struct{})}
	defer c.Close()
	for _, a := range []string{"127.0.0.1:1", "127.0.0.1:2"} {
		if err := c.add(a); err != nil {
			t.Fatal(err)
		}
	}
	id := func(b byte) ring.ID { var x ring.ID; x[0] = b; return x }
	c.vnodes = []ring.Ref{{ID: id(10), Addr: "127.0.0.1:1"}, {ID: id(20), Addr: "127.0.0.1:2"}, {ID: id(30), Addr: "127.0.0.1:1"}}
	for _, tc := range []struct {
		key  byte
		want int
	}{{5, 0}, {10, 0}, {11, 1}, {20, 1}, {25, 0}, {31, 0}} {
		if got := c.leader(id(tc.key)); got != tc.want {
			t.Errorf("leader of %d = %d, want %d", tc.key, got, tc.want)
		}
	}
	c.conns[1].failedAt.Store(time.Now().UnixNano())
	if got := c.leader(id(15)); got != -1 {
		t.Errorf("a node that failed lately is still preferred: %d", got)
	}
}
