package txlog

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/memnet"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/store"
)

// Reads of partitions that exist nowhere answer that nothing is there and
// create nothing: no partition in memory or in the store, on any host.
func TestReadsOfAbsentPartitionsCreateNothing(t *testing.T) {
	net := NewNetwork(memnet.New(1))
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	svcs := staticServices(t, net, placer, nil)
	ctx := ctxFor(t, 30*time.Second)
	for i := range 300 {
		part := fmt.Sprintf("kv/absent-%d", i)
		via := svcs[placer.set[i%3]]
		lv := []level.Level{level.Quorum, level.All, level.Leader, level.Lazy}[i%4]
		if r, err := via.Read(ctx, part, "k", lv); !errors.Is(err, ErrNotFound) || r.Exists {
			t.Fatalf("read at %s of %q: %+v, %v", lv, part, r, err)
		}
		if recs, more, err := via.List(ctx, part, "", "", 0, level.Quorum); err != nil || len(recs) != 0 || more {
			t.Fatalf("list of %q: %v, %v, %v", part, recs, more, err)
		}
		if h, err := via.History(ctx, part, "k"); err != nil || len(h) != 0 {
			t.Fatalf("history in %q: %v, %v", part, h, err)
		}
	}
	for addr, s := range svcs {
		held := 0
		s.Partitions(func(Held) error { held++; return nil })
		s.ps.mu.Lock()
		inMemory := len(s.ps.m)
		s.ps.mu.Unlock()
		if held != 0 || inMemory != 0 {
			t.Errorf("%s holds %d partitions, %d in memory, after reads of absent ones", addr, held, inMemory)
		}
	}
	if _, err := svcs["b"].Write(ctx, "kv/absent-7", set("k", "v"), level.Quorum); err != nil {
		t.Fatal(err)
	}
	for _, lv := range []level.Level{level.Quorum, level.All, level.Leader} {
		if r, err := svcs["c"].Read(ctx, "kv/absent-7", "k", lv); err != nil || string(r.Value) != "v" {
			t.Errorf("read at %s after the write: %+v, %v", lv, r, err)
		}
	}
}

// A leader that lost its store still finds the partition its replicas hold:
// its read adopts their log instead of answering that nothing is there.
func TestReadOfAPartitionTheLeaderLost(t *testing.T) {
	net := NewNetwork(memnet.New(1))
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	svcs := staticServices(t, net, placer, nil)
	ctx := ctxFor(t, 30*time.Second)
	const part = "kv/lost"
	if _, err := svcs["a"].Write(ctx, part, set("k", "v"), level.All); err != nil {
		t.Fatal(err)
	}
	fresh, err := New(staticConfig("a"), placer, net.Transport("a"), store.NewMem())
	if err != nil {
		t.Fatal(err)
	}
	fresh.NoteHosts(3)
	net.Attach("a", fresh)
	if r, err := fresh.Read(ctx, part, "k", level.Quorum); err != nil || string(r.Value) != "v" {
		t.Fatalf("read through the leader that lost its store: %+v, %v", r, err)
	}
}

// A host back from a power cut before the others, alone in a ring of its
// own, does not answer that a key its cluster holds is absent: its set is
// narrower than a creation needs, so the read takes over instead, and
// fails until the others are back (a 30-minute Jepsen run: three reads
// answered 404 for keys written at all and at quorum).
func TestLoneHostDoesNotAnswerAbsent(t *testing.T) {
	net := NewNetwork(memnet.New(1))
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	svcs := staticServices(t, net, placer, nil)
	ctx := ctxFor(t, 30*time.Second)
	const part = "kv/lone"
	if _, err := svcs["a"].Write(ctx, part, set("k", "v"), level.All); err != nil {
		t.Fatal(err)
	}
	alone := &staticPlacer{set: []string{"d"}}
	d, err := New(staticConfig("d"), alone, net.Transport("d"), store.NewMem())
	if err != nil {
		t.Fatal(err)
	}
	d.NoteHosts(4) // it has seen the cluster: a, b, c and itself
	net.Attach("d", d)
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if r, err := d.Read(rctx, part, "k", level.Quorum); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("a read on a host alone in its ring: %+v, %v; want it to fail, not to find nothing", r, err)
	}
}
