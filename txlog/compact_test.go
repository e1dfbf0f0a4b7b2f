package txlog

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/memnet"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/store"
)

// verifyReplica checks that svc's replica of part is whole above its base:
// every entry from base+1 to the head is there and chains to the base's
// hash, and the head is the log's last hash. It returns the base.
func verifyReplica(t *testing.T, svc *Service, part string) uint64 {
	t.Helper()
	p, err := svc.ps.get(part)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	base, prev, last, lastHash := p.base, p.baseHash, p.last, p.lastHash
	p.mu.Unlock()
	for h := base + 1; h <= last; {
		batch, err := svc.HandleFetch(part, h, batchEntries)
		if err != nil {
			t.Fatalf("%s: fetch from %d: %v", svc.cfg.Addr, h, err)
		}
		if len(batch) == 0 {
			t.Fatalf("%s: the log ends at %d, its head is %d", svc.cfg.Addr, h-1, last)
		}
		for _, tx := range batch {
			if tx.Height != h || tx.Prev != prev {
				t.Fatalf("%s: the log breaks at %d", svc.cfg.Addr, h)
			}
			prev = tx.Hash()
			h++
		}
	}
	if prev != lastHash {
		t.Fatalf("%s: the log does not end in its head", svc.cfg.Addr)
	}
	return base
}

// sameRecords checks that every service holds the want values of part.
func sameRecords(t *testing.T, svcs map[string]*Service, part string, want map[string]string) {
	t.Helper()
	for addr, svc := range svcs {
		for name, v := range want {
			r, err := svc.HandleReadLocal(part, name)
			switch {
			case err != nil:
				t.Fatalf("%s: %s: %v", addr, name, err)
			case v == "" && r.Exists, v != "" && string(r.Value) != v:
				t.Errorf("%s: %s = %q (exists %v), want %q", addr, name, r.Value, r.Exists, v)
			}
		}
	}
}

// After compaction every record reads as before, each record's history
// keeps its latest versions and still verifies, the log verifies from its
// base, and writes go on. A replica that missed entries compacted on the
// others, one that takes over behind them and a host seeding the partition
// get the snapshot instead; entries cut from a compacted log are undone
// from the versions compaction kept.
func TestCompaction(t *testing.T) {
	faults := memnet.New(1)
	net := NewNetwork(faults)
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	svcs := staticServices(t, net, placer, nil)
	ctx := ctxFor(t, 60*time.Second)
	const part = "kv/compact"
	write := func(via string, ch ...Change) {
		t.Helper()
		if _, err := svcs[via].Write(ctx, part, ch, level.Quorum); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{}
	for i := range 40 {
		write("a", Change{Name: "hot", Value: fmt.Appendf(nil, "hot %d", i)})
		want["hot"] = fmt.Sprintf("hot %d", i)
		if i%10 == 0 {
			write("a", Change{Name: "warm", Value: fmt.Appendf(nil, "warm %d", i)}, Change{Name: fmt.Sprint("once", i), Value: []byte("x")})
			want["warm"], want[fmt.Sprint("once", i)] = fmt.Sprintf("warm %d", i), "x"
		}
	}
	write("a", Change{Name: "", Value: []byte("unnamed")}) // the record the key-value API uses
	want[""] = "unnamed"
	write("a", Change{Name: "gone", Value: []byte("g")})
	write("a", Change{Name: "gone", Delete: true})
	want["gone"] = ""
	// Nothing is an hour old yet.
	if st, err := svcs["a"].Compact(ctx, DefaultRetention); err != nil || st.Dropped != 0 || st.Compacted != 0 {
		t.Errorf("compaction keeping an hour: %+v, %v", st, err)
	}
	keep := Retention{Keep: 3}
	compactAll := func(addrs ...string) {
		t.Helper()
		for _, a := range addrs {
			st, err := svcs[a].Compact(ctx, keep)
			if err != nil {
				t.Fatalf("%s: compact: %v", a, err)
			}
			if st.Partitions != 1 {
				t.Errorf("%s: compacted %+v", a, st)
			}
		}
	}
	// Bring every replica level, so that all have the same to compact.
	if _, err := svcs["a"].Read(ctx, part, "hot", level.All); err != nil {
		t.Fatal(err)
	}
	compactAll("a", "b", "c")
	sameRecords(t, svcs, part, want)
	for addr, svc := range svcs {
		if base := verifyReplica(t, svc, part); base == 0 {
			t.Errorf("%s: not compacted", addr)
		}
		if _, err := svc.HandleFetch(part, 1, 10); !errors.Is(err, ErrCompacted) {
			t.Errorf("%s: fetch from 1 after compaction: %v, want ErrCompacted", addr, err)
		}
	}
	// warm's oldest versions share their entries with once0..once30,
	// which have one version each: those entries stay, and so they are
	// in warm's history too.
	for name, n := range map[string]int{"hot": 3, "warm": 4, "once0": 1, "gone": 2} {
		h, err := svcs["a"].History(ctx, part, name)
		if err != nil || len(h) != n {
			t.Errorf("history of %s: %d transactions, %v; want %d", name, len(h), err, n)
		}
	}

	// c misses writes that a and b then compact; it gets the snapshot.
	faults.Partition([]string{"c"}, []string{"a", "b"})
	for i := range 20 {
		write("a", Change{Name: "hot", Value: fmt.Appendf(nil, "later %d", i)}, Change{Name: fmt.Sprint("new", i), Value: []byte("y")})
		want["hot"], want[fmt.Sprint("new", i)] = fmt.Sprintf("later %d", i), "y"
	}
	compactAll("a", "b")
	faults.Heal()
	if _, err := svcs["a"].Write(ctx, part, set("after", "z"), level.All); err != nil {
		t.Fatalf("write at all after the heal: %v", err)
	}
	want["after"] = "z"
	// A read at all brings every replica's commit point to the write.
	if _, err := svcs["a"].Read(ctx, part, "after", level.All); err != nil {
		t.Fatal(err)
	}
	sameRecords(t, svcs, part, want)
	verifyReplica(t, svcs["c"], part)

	// c falls behind again, the others compact, and c is made leader: it
	// adopts their log through a snapshot.
	faults.Partition([]string{"c"}, []string{"a", "b"})
	for i := range 10 {
		write("a", Change{Name: "hot", Value: fmt.Appendf(nil, "third %d", i)})
		want["hot"] = fmt.Sprintf("third %d", i)
	}
	compactAll("a", "b")
	faults.Heal()
	placer.lead("c")
	write("c", Change{Name: "by-c", Value: []byte("c")})
	want["by-c"] = "c"
	if _, err := svcs["c"].Read(ctx, part, "by-c", level.All); err != nil {
		t.Fatal(err)
	}
	sameRecords(t, svcs, part, want)

	// c, cut off, applies a write that never commits; b takes over; the
	// write is cut from c's log and its records go back.
	compactAll("a", "b", "c")
	faults.Partition([]string{"c"}, []string{"a", "b"})
	if _, err := svcs["c"].Write(ctx, part, []Change{{Name: "hot", Value: []byte("lost")}, {Name: "phantom", Value: []byte("p")}, {Name: "", Value: []byte("lost")}}, level.Quorum); err == nil {
		t.Fatal("a write on a minority committed")
	}
	placer.lead("b")
	write("b", Change{Name: "by-b", Value: []byte("b")})
	want["by-b"], want["phantom"] = "b", ""
	faults.Heal()
	if _, err := svcs["b"].Read(ctx, part, "by-b", level.All); err != nil {
		t.Fatal(err)
	}
	sameRecords(t, svcs, part, want)
	for _, svc := range svcs {
		verifyReplica(t, svc, part)
	}

	// A host about to join seeds the partition from the leader's snapshot.
	d, err := New(Config{Addr: "d", Replicas: 3, CallTimeout: 100 * time.Millisecond}, placer, net.Transport("d"), store.NewMem())
	if err != nil {
		t.Fatal(err)
	}
	net.Attach("d", d)
	if err := d.Seed(ctx, part, "b"); err != nil {
		t.Fatalf("seed: %v", err)
	}
	sameRecords(t, map[string]*Service{"d": d}, part, want)
	if base := verifyReplica(t, d, part); base == 0 {
		t.Error("the seeded replica has no base")
	}
}

// A replica that caught up through a snapshot holds its records' states at
// the snapshot's height but not the entries that made them. Once one of
// those records changes, the replica must still give a snapshot at its
// base: the Jepsen harness saw a leaving node's hand-off wait for ever on
// a member that needed a snapshot from such a replica ("at height 158: key
// not found"), and a takeover that had to adopt its log failed the same
// way.
func TestSnapshotFromAReplicaThatInstalledOne(t *testing.T) {
	faults := memnet.New(1)
	net := NewNetwork(faults)
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	svcs := staticServices(t, net, placer, nil)
	ctx := ctxFor(t, 30*time.Second)
	const part = "kv/reinstall"
	write := func(lv level.Level, ch ...Change) {
		t.Helper()
		if _, err := svcs["a"].Write(ctx, part, ch, lv); err != nil {
			t.Fatal(err)
		}
	}
	write(level.All, set("old", "before")...)
	faults.Partition([]string{"c"}, []string{"a", "b"})
	write(level.Quorum, set("old", "at the base")...)
	for i := range 10 {
		write(level.Quorum, set("hot", fmt.Sprint(i))...)
	}
	for _, a := range []string{"a", "b"} {
		if _, err := svcs[a].Compact(ctx, Retention{Keep: 1}); err != nil {
			t.Fatal(err)
		}
	}
	faults.Heal()
	write(level.All, set("hot", "healed")...) // c installs a snapshot
	c, _ := svcs["c"].ps.get(part)
	c.mu.Lock()
	base := c.base
	c.mu.Unlock()
	if base == 0 {
		t.Fatal("c did not catch up through a snapshot")
	}
	write(level.All, set("old", "after the base")...)
	pg, err := svcs["c"].HandleSnapshot(part, 0, "")
	if err != nil {
		t.Fatalf("a snapshot at c's base: %v", err)
	}
	got := map[string]string{}
	for _, r := range pg.Records {
		got[r.Name] = string(r.Value)
	}
	if pg.Height != base || got["old"] != "at the base" {
		t.Errorf("c's snapshot at %d (base %d) holds old = %q; want the value at its base", pg.Height, base, got["old"])
	}
	// c compacts in turn, and still gives the same snapshot after.
	write(level.All, set("hot", "last")...) // c learns that the write to old committed
	if _, err := svcs["c"].Compact(ctx, Retention{Keep: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := svcs["c"].HandleSnapshot(part, 0, ""); err != nil {
		t.Fatalf("a snapshot at c's base after it compacted: %v", err)
	}
	// The state installed for old went once its base passed a later
	// version; the one for a record that never changed since stays.
	c.mu.Lock()
	_, errOld := svcs["c"].ps.installed(c, "old")
	c.mu.Unlock()
	if !errors.Is(errOld, store.ErrNotFound) {
		t.Errorf("the installed state of old outlived the base: %v", errOld)
	}
	verifyReplica(t, svcs["c"], part)
}

// A leader whose idea of a follower's log is older than the follower's
// compaction sends entries from below the follower's base: the follower
// takes those above it, so the leader is not stuck (a leave's hand-off
// waited on such a follower for as long as the leader led).
func TestAppendBelowTheFollowersBase(t *testing.T) {
	net := NewNetwork(memnet.New(1))
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	svcs := staticServices(t, net, placer, nil)
	ctx := ctxFor(t, 10*time.Second)
	const part = "kv/below-base"
	for i := range 10 {
		if _, err := svcs["a"].Write(ctx, part, set("k", fmt.Sprint(i)), level.All); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svcs["c"].Compact(ctx, Retention{Keep: 1}); err != nil {
		t.Fatal(err)
	}
	c, _ := svcs["c"].ps.get(part)
	c.mu.Lock()
	base := c.base
	c.mu.Unlock()
	if base < 3 {
		t.Fatalf("c compacted to %d", base)
	}
	a, _ := svcs["a"].ps.get(part)
	a.mu.Lock()
	a.match["c"] = 1 // as if a last heard of c long ago
	a.mu.Unlock()
	if _, err := svcs["a"].Write(ctx, part, set("k", "after"), level.All); err != nil {
		t.Fatalf("a write at all with c's base at %d above the leader's idea of it: %v", base, err)
	}
	verifyReplica(t, svcs["c"], part)
	c.mu.Lock()
	a.mu.Lock()
	if c.last != a.last || c.lastHash != a.lastHash {
		t.Errorf("c's log ends at %d, the leader's at %d", c.last, a.last)
	}
	a.mu.Unlock()
	c.mu.Unlock()
}
