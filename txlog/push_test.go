package txlog

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/memnet"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/store"
)

// staticPlacer names the same replica set for every key, leader first; the
// test moves the leadership by hand.
type staticPlacer struct {
	mu  sync.Mutex
	set []string
}

func (p *staticPlacer) Lookup(_ context.Context, key ring.ID, n int) (ring.Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	res := ring.Result{Key: key}
	for _, a := range p.set[:min(n, len(p.set))] {
		res.Replicas = append(res.Replicas, ring.Ref{Addr: a})
	}
	return res, nil
}

func (p *staticPlacer) lead(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, a := range p.set {
		if a == addr {
			p.set[0], p.set[i] = p.set[i], p.set[0]
		}
	}
}

// blockingKV is a store one of whose reads, of the key it is armed with,
// holds the value it read until released.
type blockingKV struct {
	*store.Mem
	mu      sync.Mutex
	key     []byte
	reached chan struct{}
	release chan struct{}
}

func (b *blockingKV) arm(key []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.key, b.reached, b.release = key, make(chan struct{}), make(chan struct{})
}

func (b *blockingKV) Get(key []byte) ([]byte, error) {
	b.mu.Lock()
	armed := b.key != nil && bytes.Equal(key, b.key)
	reached, release := b.reached, b.release
	if armed {
		b.key = nil
	}
	b.mu.Unlock()
	v, err := b.Mem.Get(key)
	if armed {
		close(reached)
		<-release
	}
	return v, err
}

// TestDeposedPushSendsNoForeignCommit pins the race the Jepsen harness
// found: a leader's background send that read one of its own entries, was
// deposed while a new leader replaced that entry and told it a higher
// commit point, and then sent the old entry with the new commit point,
// made a replica that had not heard of the new leader hold an entry as
// committed that no majority held. A send now reads its entries and the
// commit point at once, while it still leads.
func TestDeposedPushSendsNoForeignCommit(t *testing.T) {
	faults := memnet.New(1)
	net := NewNetwork(faults)
	placer := &staticPlacer{set: []string{"a", "b", "c", "d", "e"}}
	svcs := map[string]*Service{}
	var aKV *blockingKV
	for _, addr := range placer.set {
		var db kv = store.NewMem()
		if addr == "a" {
			aKV = &blockingKV{Mem: store.NewMem()}
			db = aKV
		}
		svc, err := New(Config{Addr: addr, Replicas: 5, CallTimeout: 200 * time.Millisecond, Patience: time.Second}, placer, net.Transport(addr), db)
		if err != nil {
			t.Fatal(err)
		}
		svc.NoteHosts(5)
		net.Attach(addr, svc)
		svcs[addr] = svc
	}
	ctx := context.Background()
	const part = "kv/race"
	write := func(via string, lv level.Level, v string) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := svcs[via].Write(wctx, part, []Change{{Name: "", Value: []byte(v)}}, lv); err != nil {
			t.Fatalf("write %s through %s: %v", v, via, err)
		}
	}
	// Committed everywhere under a's leadership.
	write("a", level.Quorum, "v1")
	pa, _ := svcs["a"].ps.get(part)
	pa.mu.Lock()
	k := pa.last
	pa.mu.Unlock()

	// a, cut off, appends an entry at k+1 that no one else gets.
	faults.Partition([]string{"a"}, []string{"b", "c", "d", "e"})
	write("a", level.Leader, "lost")
	time.Sleep(300 * time.Millisecond) // a's sends of it fail while it is cut off

	// b takes over with c and d, unknown to a and e, and commits past k+1.
	faults.Heal()
	cutAllBut := func() {
		faults.Partition([]string{"a"}, []string{"c", "d"})
		faults.Partition([]string{"e"}, []string{"b", "c", "d"})
	}
	faults.Partition([]string{"a"}, []string{"b"})
	cutAllBut()
	placer.lead("b")
	write("b", level.Quorum, "v2")

	// a still thinks it leads; its send of k+1 to e stalls on reading the
	// entry while b's next write reaches a and deposes it.
	faults.Heal()
	cutAllBut()
	aKV.arm(pa.logKey(k + 1))
	pushed := make(chan error, 1)
	go func() { pushed <- svcs["a"].push(ctx, pa, "e", k+1) }()
	select {
	case <-aKV.reached:
	case err := <-pushed:
		pa.mu.Lock()
		t.Fatalf("a's send ended before reading entry %d: %v (a leads at %s, last %d)", k+1, err, pa.leading, pa.last)
	}
	wrote := make(chan struct{})
	go func() { defer close(wrote); write("b", level.Quorum, "v3") }()
	time.Sleep(300 * time.Millisecond)
	close(aKV.release)
	<-wrote
	<-pushed

	pb, _ := svcs["b"].ps.get(part)
	pe, _ := svcs["e"].ps.get(part)
	hb, err := svcs["b"].ps.hashAtLocked(pb, k+1)
	if err != nil {
		t.Fatal(err)
	}
	pe.mu.Lock()
	defer pe.mu.Unlock()
	he, _ := svcs["e"].ps.hashAtLocked(pe, k+1)
	if pe.last >= k+1 && he != hb && pe.commit >= k+1 {
		t.Fatalf("e holds as committed (commit %d), at %d, an entry (%s) that the leader's log does not have (%s)", pe.commit, k+1, he, hb)
	}
}
