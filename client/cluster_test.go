package client

import (
	"testing"

	"github.com/difuse/difuse/blockstore"
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
