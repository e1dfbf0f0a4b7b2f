package txlog

import (
	"testing"
	"time"

	"github.com/difuse/difuse/internal/memnet"
	"github.com/difuse/difuse/level"
)

// A write whose answer was lost and that a later write overwrote is not
// applied again when its retry reaches a replica that caught up through a
// snapshot: the replica knows the write's ID, since what it installs
// covers only entries older than the retention, and the rest reach it as
// entries, IDs and all.
func TestAtMostOnceAcrossASnapshot(t *testing.T) {
	faults := memnet.New(1)
	net := NewNetwork(faults)
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	svcs := staticServices(t, net, placer, nil)
	ctx := ctxFor(t, 10*time.Second)
	const part = "kv/once"
	now := time.Now()
	for _, s := range svcs {
		s.cfg.Clock = func() time.Time { return now }
	}
	if _, err := svcs["a"].Write(ctx, part, set("k", "first"), level.All); err != nil {
		t.Fatal(err)
	}
	// c falls behind; two hours later a write's answer is lost, and
	// another overwrites what it wrote.
	faults.Partition([]string{"c"}, []string{"a", "b"})
	for i := range 3 {
		if _, err := svcs["a"].Write(ctx, part, set("old", string(rune('0'+i))), level.Quorum); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(2 * time.Hour)
	retried := Request{Partition: part, Level: level.Quorum, Kind: KindWrite, ID: NewWriteID(), Write: set("k", "retried write")}
	if _, err := svcs["a"].Do(ctx, retried); err != nil {
		t.Fatal(err)
	}
	if _, err := svcs["a"].Write(ctx, part, set("k", "overwritten"), level.Quorum); err != nil {
		t.Fatal(err)
	}
	// The leader compacts what is older than an hour: c, back, needs a
	// snapshot.
	if _, err := svcs["a"].Compact(ctx, Retention{Keep: 1, For: time.Hour}); err != nil {
		t.Fatal(err)
	}
	faults.Heal()
	if _, err := svcs["a"].Write(ctx, part, set("k2", "brings c up"), level.All); err != nil {
		t.Fatal(err)
	}
	// Then only c and b are left, c leads, and the lost write's retry
	// reaches it.
	faults.Partition([]string{"a"}, []string{"b", "c"})
	placer.lead("c")
	if _, err := svcs["c"].Do(ctx, retried); err != nil {
		t.Fatal(err)
	}
	r, err := svcs["c"].Read(ctx, part, "k", level.Quorum)
	if err != nil || string(r.Value) != "overwritten" {
		t.Fatalf("k after the retry: %q, %v; want the value that overwrote the write, not the write applied again", r.Value, err)
	}
}

// A leader whose clock runs hours behind stamps its entries as old; a
// replica compacting by its own clock still keeps the write IDs it
// learned within the retention, so a retry is not applied twice.
func TestCompactionKeepsYoungIDsWhateverTheLeadersClock(t *testing.T) {
	faults := memnet.New(1)
	net := NewNetwork(faults)
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	svcs := staticServices(t, net, placer, nil)
	ctx := ctxFor(t, 10*time.Second)
	const part = "kv/skew"
	svcs["a"].cfg.Clock = func() time.Time { return time.Now().Add(-3 * time.Hour) }
	retried := Request{Partition: part, Level: level.All, Kind: KindWrite, ID: NewWriteID(), Write: set("k", "retried write")}
	if _, err := svcs["a"].Do(ctx, retried); err != nil {
		t.Fatal(err)
	}
	for _, w := range [][]Change{set("k", "overwritten"), set("other", "1"), set("other", "2")} {
		if _, err := svcs["a"].Write(ctx, part, w, level.All); err != nil {
			t.Fatal(err)
		}
	}
	for _, addr := range []string{"b", "c"} {
		if _, err := svcs[addr].Compact(ctx, Retention{Keep: 1, For: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	faults.Partition([]string{"a"}, []string{"b", "c"})
	placer.lead("b")
	retried.Level = level.Quorum
	if _, err := svcs["b"].Do(ctx, retried); err != nil {
		t.Fatal(err)
	}
	r, err := svcs["b"].Read(ctx, part, "k", level.Quorum)
	if err != nil || string(r.Value) != "overwritten" {
		t.Fatalf("k after the retry: %q, %v; want the write not applied again", r.Value, err)
	}
}
