package txlog

import (
	"errors"
	"testing"
	"time"

	"github.com/difuse/difuse/memnet"
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
	if _, err := svcs["a"].Write(ctx, part, set("k", "v1"), Quorum); err != nil {
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
	if _, err := svcs["a"].Write(ctx, part, set("k", "committed"), Quorum); err != nil {
		t.Fatal(err)
	}
	faults.Partition([]string{"a"}, []string{"b", "c"})
	if _, err := svcs["a"].Write(ctx, part, set("k", "uncommitted"), Quorum); err == nil {
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
	if _, err := svcs["c"].Write(ctx, part, set("k", "1"), Quorum); err != nil {
		t.Fatal(err)
	}
	// b takes over while c is cut off.
	faults.Partition([]string{"c"}, []string{"a", "b"})
	placer.lead("b")
	if _, err := svcs["b"].Write(ctx, part, set("k", "2"), Quorum); err != nil {
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
		if _, err := svcs["b"].Write(ctx, part, set("k", string(rune('a'+i))), All); err != nil {
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
	if _, err := svcs["c"].Write(ctx, part, set("k", "c again"), Quorum); err != nil {
		t.Fatal(err)
	}
	if lead, _, _ := leading(svcs["c"]); lead.N != bBallot.N+1 {
		t.Errorf("c took over at %s, after b's %s", lead, bBallot)
	}
}
