package gc

import (
	"context"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/memcluster"
)

// One host at a time holds the background collector's lease; it renews
// it, and once it has expired another host takes it.
func TestLease(t *testing.T) {
	c := memcluster.Start(t, 3)
	ctx := context.Background()
	var cs []*Collector
	now := time.Now()
	for _, h := range c.Hosts {
		col, err := New(Config{Addr: h.Addr, Interval: time.Hour}, nil, nil, h.Log, nil, h.Blocks.Local())
		if err != nil {
			t.Fatal(err)
		}
		col.clock = func() time.Time { return now }
		cs = append(cs, col)
	}
	for i, want := range []bool{true, false, false} {
		if ok, err := cs[i].lease(ctx); ok != want || err != nil {
			t.Fatalf("host %d took the lease: %v, %v; want %v", i, ok, err, want)
		}
	}
	if ok, err := cs[0].lease(ctx); !ok || err != nil {
		t.Fatalf("the holder did not renew its lease: %v, %v", ok, err)
	}
	now = now.Add(31 * time.Minute) // past half an interval
	if ok, err := cs[2].lease(ctx); !ok || err != nil {
		t.Fatalf("an expired lease was not taken: %v, %v", ok, err)
	}
	if ok, _ := cs[0].lease(ctx); ok {
		t.Fatal("the old holder took the lease back")
	}
}
