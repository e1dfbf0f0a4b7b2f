package node

import (
	"context"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/memnet"
	"github.com/difuse/difuse/ring"
)

// Placements are kept for a while, and forgotten when the ring changes.
func TestPlacements(t *testing.T) {
	net := ring.NewNetworkWith(memnet.New(1))
	rh, err := ring.New(ring.Config{Addr: "h0", TickInterval: 5 * time.Millisecond}, net.Transport("h0"))
	if err != nil {
		t.Fatal(err)
	}
	net.Attach("h0", rh)
	if err := rh.Create(); err != nil {
		t.Fatal(err)
	}
	p := &placements{ring: rh, cache: map[placementKey]placement{}}
	ctx := context.Background()
	key := ring.HashKey([]byte("k"))
	first, err := p.Lookup(ctx, key, 3)
	if err != nil || len(first.Replicas) != 1 {
		t.Fatalf("lookup: %+v, %v", first, err)
	}
	p.cache[placementKey{key, 3}] = placement{ring.Result{Key: key}, time.Now()}
	if again, _ := p.Lookup(ctx, key, 3); len(again.Replicas) != 0 {
		t.Error("a fresh placement was looked up again")
	}
	p.cache[placementKey{key, 3}] = placement{ring.Result{Key: key}, time.Now().Add(-2 * placementTTL)}
	if again, _ := p.Lookup(ctx, key, 3); len(again.Replicas) != 1 {
		t.Error("an expired placement was used")
	}
	p.forget()
	if len(p.cache) != 0 {
		t.Error("forget kept placements")
	}
}
