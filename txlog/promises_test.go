package txlog

import (
	"errors"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/memnet"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/store"
)

// A replica that drops its copy of a partition (healing moved it
// elsewhere) still refuses the ballots below the one it promised: a
// deposed leader that took it back would otherwise commit through it
// what the new leader's majority never saw.
func TestDroppedReplicaKeepsItsPromise(t *testing.T) {
	net := NewNetwork(memnet.New(1))
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	svcs := staticServices(t, net, placer, nil)
	ctx := ctxFor(t, 10*time.Second)
	const part = "kv/dropped"
	if _, err := svcs["a"].Write(ctx, part, set("k", "v1"), level.Quorum); err != nil {
		t.Fatal(err)
	}
	high := Ballot{N: 50, Host: "b"}
	if rep, err := svcs["c"].HandlePrepare(part, high); err != nil || !rep.OK {
		t.Fatalf("prepare at %s: %+v, %v", high, rep, err)
	}
	if err := svcs["c"].Drop(part); err != nil {
		t.Fatal(err)
	}
	low := Ballot{N: 7, Host: "a"}
	if rep, err := svcs["c"].HandlePrepare(part, low); err != nil || rep.OK || rep.Promised != high {
		t.Fatalf("a prepare below the promise, after the drop: %+v, %v", rep, err)
	}
	tx := &Tx{Partition: part, Height: 1, Ballot: low, Ops: []Op{{Kind: OpSet, Name: "k", Value: []byte("late")}}}
	rep, err := svcs["c"].HandleAppend(ctx, AppendRequest{Partition: part, Ballot: low, Txs: []*Tx{tx}})
	if err != nil || !rep.Stale {
		t.Fatalf("an append below the promise, after the drop: %+v, %v", rep, err)
	}
	held := 0
	svcs["c"].Partitions(func(h Held) error { held++; return nil })
	if held != 0 {
		t.Errorf("the dropped partition is still listed as held (%d)", held)
	}
}

// A lazy read at the leader answers what is committed, never an entry the
// leader applied but no majority holds.
func TestLazyReadsSeeCommittedOnly(t *testing.T) {
	faults := memnet.New(1)
	net := NewNetwork(faults)
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	svcs := staticServices(t, net, placer, nil)
	ctx := ctxFor(t, 10*time.Second)
	const part = "kv/lazy"
	if _, err := svcs["a"].Write(ctx, part, set("k", "committed"), level.Quorum); err != nil {
		t.Fatal(err)
	}
	faults.Partition([]string{"a"}, []string{"b", "c"})
	if _, err := svcs["a"].Write(ctx, part, set("k", "uncommitted"), level.Quorum); err == nil {
		t.Fatal("a write cut off from every other replica was acknowledged")
	}
	r, err := svcs["a"].HandleReadLocal(part, "k")
	if err != nil || string(r.Value) != "committed" {
		t.Fatalf("the leader's local read: %q, %v; want the committed value", r.Value, err)
	}
}

// A leader outbid by another takes note of the other's ballot as a ballot
// to beat, not as a promise of its own: it goes on accepting the new
// leader's appends, so the new leader keeps its ballot (no churn), and a
// takeover of its own later goes above the other's ballot.
func TestOutbidLeaderRecordsNoPromise(t *testing.T) {
	faults := memnet.New(1)
	net := NewNetwork(faults)
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	svcs := staticServices(t, net, placer, nil)
	ctx := ctxFor(t, 10*time.Second)
	const part = "kv/outbid"
	placer.lead("c")
	if _, err := svcs["c"].Write(ctx, part, set("k", "1"), level.Quorum); err != nil {
		t.Fatal(err)
	}
	// b takes over while c is cut off.
	faults.Partition([]string{"c"}, []string{"a", "b"})
	placer.lead("b")
	if _, err := svcs["b"].Write(ctx, part, set("k", "2"), level.Quorum); err != nil {
		t.Fatal(err)
	}
	leading := func(svc *Service) (Ballot, Ballot, Ballot) {
		p, _ := svc.ps.get(part)
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.leading, p.promised, p.seen
	}
	bBallot, _, _ := leading(svcs["b"])
	// c, healed, still leads in its own view; its next append to a is
	// refused: it learns it is outbid.
	faults.Heal()
	pc, _ := svcs["c"].ps.get(part)
	if err := svcs["c"].push(ctx, pc, "a", pc.last); !errors.Is(err, ErrStaleBallot) {
		t.Fatalf("c's append to a: %v, want a refusal", err)
	}
	lead, promised, seen := leading(svcs["c"])
	if !lead.IsZero() || seen != bBallot || promised == bBallot {
		t.Errorf("c after the refusal: leading %s, promised %s, seen %s; want not leading, b's ballot %s seen, not promised", lead, promised, seen, bBallot)
	}
	// b goes on writing at level all, c among the replicas, at its ballot.
	for i := range 5 {
		if _, err := svcs["b"].Write(ctx, part, set("k", string(rune('a'+i))), level.All); err != nil {
			t.Fatalf("write %d at level all through b: %v", i, err)
		}
	}
	after, _, _ := leading(svcs["b"])
	t.Logf("ballot churn: b led at %s before c learned it was outbid, at %s after five writes", bBallot, after)
	if after != bBallot {
		t.Errorf("b's ballot went from %s to %s", bBallot, after)
	}
	// A takeover by c goes above b's ballot.
	placer.lead("c")
	if _, err := svcs["c"].Write(ctx, part, set("k", "c again"), level.Quorum); err != nil {
		t.Fatal(err)
	}
	if lead, _, _ := leading(svcs["c"]); lead.N != bBallot.N+1 {
		t.Errorf("c took over at %s, after b's %s", lead, bBallot)
	}
}

// gatedStore holds every Sync while armed, until released.
type gatedStore struct {
	*store.Mem
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func newGatedStore() *gatedStore {
	return &gatedStore{Mem: store.NewMem(), entered: make(chan struct{}, 64), release: make(chan struct{})}
}

func (g *gatedStore) Sync() error {
	if g.armed.Load() {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.Mem.Sync()
}

// beforeSync runs op with g's syncs held, and reports whether op returned
// before a sync it needs finished (or began): the sync is released once op
// returns, or a while after it began if op waits for it.
func (g *gatedStore) beforeSync(op func()) bool {
	g.armed.Store(true)
	defer g.armed.Store(false)
	done, early := make(chan struct{}), make(chan bool, 1)
	go func() {
		defer close(g.release)
		select {
		case <-g.entered:
		case <-done:
			early <- true // no sync even began
			return
		}
		select {
		case <-done:
			early <- true
		case <-time.After(100 * time.Millisecond):
			early <- false
		}
	}()
	op()
	close(done)
	return <-early
}

// A write at level leader is acknowledged once the leader's own copy is
// durable, not before: its sync still under way, the write waits.
func TestLeaderLevelWaitsForTheLeadersSync(t *testing.T) {
	faults := memnet.New(1)
	net := NewNetwork(faults)
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	svcs := staticServices(t, net, placer, nil)
	gated := newGatedStore()
	a, err := New(staticConfig("a"), placer, net.Transport("a"), gated)
	if err != nil {
		t.Fatal(err)
	}
	a.NoteHosts(3)
	net.Attach("a", a)
	svcs["a"] = a
	ctx := ctxFor(t, 10*time.Second)
	const part = "kv/leader-level"
	if _, err := a.Write(ctx, part, set("k", "1"), level.Quorum); err != nil {
		t.Fatal(err)
	}
	faults.Partition([]string{"a"}, []string{"b", "c"}) // the followers cannot answer
	if gated.beforeSync(func() {
		if _, err := a.Write(ctx, part, set("k", "2"), level.Leader); err != nil {
			t.Error(err)
		}
	}) {
		t.Fatal("the write at level leader was acknowledged before the leader's sync finished")
	}
	// What was acknowledged survives a power cut of the leader.
	gated.Crash()
	again, err := New(staticConfig("a"), placer, net.Transport("a"), gated)
	if err != nil {
		t.Fatal(err)
	}
	net.Attach("a", again)
	if r, err := again.HandleReadLocal(part, "k"); err != nil || string(r.Value) != "2" && string(r.Value) != "1" {
		t.Fatalf("after the cut: %q, %v", r.Value, err)
	}
	p, _ := again.ps.get(part)
	if p.last < 3 {
		t.Fatalf("after the cut the leader's log ends at %d: the acknowledged write is gone", p.last)
	}
}

// A quorum read counts the leader's own copy of the log only once it is
// durable: with an entry in the leader's log not yet synced (a write
// under way), the read waits for the leader's sync.
func TestQuorumReadsCountDurableCopies(t *testing.T) {
	faults := memnet.New(1)
	net := NewNetwork(faults)
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	staticServices(t, net, placer, nil) // b and c; a is replaced below
	gated := newGatedStore()
	a, err := New(staticConfig("a"), placer, net.Transport("a"), gated)
	if err != nil {
		t.Fatal(err)
	}
	a.NoteHosts(3)
	net.Attach("a", a)
	ctx := ctxFor(t, 10*time.Second)
	const part = "kv/quorum-read"
	if _, err := a.Write(ctx, part, set("k", "old"), level.All); err != nil {
		t.Fatal(err)
	}
	// An entry in the leader's log that is not durable yet.
	p, _ := a.ps.get(part)
	p.mu.Lock()
	tx := &Tx{Partition: part, Height: p.last + 1, Prev: p.lastHash, Ballot: p.leading, Ops: []Op{{Kind: OpSet, Name: "k", Value: []byte("new")}}}
	err = a.ps.write(p, tx.Height, []*Tx{tx}, p.promised, p.commit, tx.Height, false)
	p.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	faults.Partition([]string{"a", "b"}, []string{"c"})
	var r Record
	if gated.beforeSync(func() { r, err = a.Read(ctx, part, "k", level.Quorum) }) {
		t.Fatal("the quorum read counted the leader's copy before it was synced")
	}
	if err != nil || string(r.Value) != "new" {
		t.Fatalf("the quorum read: %q, %v", r.Value, err)
	}
}

// The planted bug Config.UnsafeForgetPromises: after promising ballot 5, a
// replica refuses an append at ballot 3, unless it forgets its promises.
func TestUnsafeForgetPromises(t *testing.T) {
	const part = "kv/forgetful"
	high, low := Ballot{N: 5, Host: "b"}, Ballot{N: 3, Host: "a"}
	for _, forget := range []bool{false, true} {
		svc, err := New(Config{Addr: "c", UnsafeForgetPromises: forget}, &staticPlacer{set: []string{"a", "b", "c"}}, nil, store.NewMem())
		if err != nil {
			t.Fatal(err)
		}
		if rep, err := svc.HandlePrepare(part, high); err != nil || !rep.OK {
			t.Fatalf("forget=%v: prepare at %s: %+v, %v", forget, high, rep, err)
		}
		tx := &Tx{Partition: part, Height: 1, Ballot: low, Ops: []Op{{Kind: OpSet, Name: "k", Value: []byte("deposed")}}}
		rep, err := svc.HandleAppend(t.Context(), AppendRequest{Partition: part, Ballot: low, Txs: []*Tx{tx}})
		if err != nil {
			t.Fatalf("forget=%v: append at %s: %v", forget, low, err)
		}
		if accepted := !rep.Stale && rep.Last == 1; accepted != forget {
			t.Errorf("forget=%v: an append at %s after a promise of %s answered %+v", forget, low, high, rep)
		}
	}
}

// A prepare or append at a ballot so high that the next one would wrap
// around is refused, and the partition goes on taking writes.
func TestHighestBallotIsRefused(t *testing.T) {
	net := NewNetwork(memnet.New(1))
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	svcs := staticServices(t, net, placer, nil)
	ctx := ctxFor(t, 10*time.Second)
	const part = "kv/ceiling"
	if _, err := svcs["a"].Write(ctx, part, set("k", "v1"), level.Quorum); err != nil {
		t.Fatal(err)
	}
	top := Ballot{N: math.MaxUint64, Host: "x"}
	for _, r := range []string{"a", "b", "c"} {
		if rep, err := svcs[r].HandlePrepare(part, top); !errors.Is(err, ErrBadRequest) || rep.OK {
			t.Errorf("prepare at %s on %s: %+v, %v", top, r, rep, err)
		}
		if rep, err := svcs[r].HandleAppend(ctx, AppendRequest{Partition: part, Ballot: top}); !errors.Is(err, ErrBadRequest) {
			t.Errorf("append at %s on %s: %+v, %v", top, r, rep, err)
		}
	}
	for _, r := range []string{"a", "b", "c"} {
		if _, err := svcs[r].Write(ctx, part, set("k", "v2-"+r), level.Quorum); err != nil {
			t.Errorf("a write through %s after the refused ballot: %v", r, err)
		}
	}
}

// A host that led a partition, and was moved out of its set without being
// told it was deposed, drops it when healing asks (it refused for as long
// as it ran); the others' copies keep every acknowledged write. While a
// request runs there as leader, the drop waits.
func TestDropByAStaleLeader(t *testing.T) {
	net := NewNetwork(memnet.New(1))
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	svcs := staticServices(t, net, placer, nil)
	ctx := ctxFor(t, 10*time.Second)
	const part = "kv/stale-leader"
	if _, err := svcs["a"].Write(ctx, part, set("k", "v1"), level.All); err != nil {
		t.Fatal(err)
	}
	p, _ := svcs["a"].ps.get(part)
	p.lead.Lock()
	if err := svcs["a"].Drop(part); !errors.Is(err, ErrLeading) {
		t.Errorf("a drop while a request runs: %v", err)
	}
	p.lead.Unlock()
	if err := svcs["a"].Drop(part); err != nil {
		t.Fatalf("a drop by a leader with no request running: %v", err)
	}
	placer.mu.Lock()
	placer.set = []string{"b", "a", "c"}
	placer.mu.Unlock()
	if r, err := svcs["b"].Read(ctx, part, "k", level.Quorum); err != nil || string(r.Value) != "v1" {
		t.Fatalf("a read through the next leader: %+v, %v", r, err)
	}
}
