package txlog

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/store"
)

// With 1 of 3 replicas down, quorum writes and reads work, all fails with
// an error saying how many replicas answered, and lazy reads answer.
func TestLevelsWithOneReplicaDown(t *testing.T) {
	c := newCluster(t, 3)
	ctx := ctxFor(t, 20*time.Second)
	if _, err := c.host("h0").svc.Write(ctx, "lv", set("a", "1"), level.All); err != nil {
		t.Fatal(err)
	}
	res, err := c.host("h0").ring.Lookup(ctx, ring.HashKey([]byte("lv")), 3)
	if err != nil {
		t.Fatal(err)
	}
	victim := res.Replicas[2].Addr // a follower
	c.kill(victim)
	var via *host
	for _, a := range c.addrs {
		if a != victim {
			via = c.host(a)
		}
	}
	if _, err := via.svc.Write(ctx, "lv", set("a", "2"), level.Quorum); err != nil {
		t.Fatalf("quorum write with one replica down: %v", err)
	}
	if r, err := via.svc.Read(ctx, "lv", "a", level.Quorum); err != nil || string(r.Value) != "2" {
		t.Fatalf("quorum read: %+v, %v", r, err)
	}
	if r, err := via.svc.Read(ctx, "lv", "a", level.Lazy); err != nil || !r.Exists {
		t.Fatalf("lazy read: %+v, %v", r, err)
	}
	if r, err := via.svc.Read(ctx, "lv", "a", level.Leader); err != nil || string(r.Value) != "2" {
		t.Fatalf("leader read: %+v, %v", r, err)
	}
	_, err = via.svc.Write(ctx, "lv", set("a", "3"), level.All)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("all write with one of three replicas down: %v, want ErrUnavailable", err)
	}
	t.Logf("all with one of three down: %v", err)
}

// Every level answers as documented while all replicas are up, and "all"
// fails with a clear error when a replica of the set is unreachable.
func TestAllFailsClearly(t *testing.T) {
	c := newCluster(t, 3)
	ctx := ctxFor(t, 20*time.Second)
	if _, err := c.host("h0").svc.Write(ctx, "af", set("a", "1"), level.Quorum); err != nil {
		t.Fatal(err)
	}
	res, _ := c.host("h0").ring.Lookup(ctx, ring.HashKey([]byte("af")), 3)
	leader, follower := res.Replicas[0].Addr, res.Replicas[2].Addr
	// Cut the follower off from the leader only: the ring still lists it.
	c.faults.Partition([]string{leader}, []string{follower})
	defer c.faults.Heal()
	_, err := c.host(leader).svc.Write(ctx, "af", set("a", "2"), level.All)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("all write with a replica cut off: %v", err)
	}
	t.Logf("all: %v", err)
	if _, err := c.host(leader).svc.Read(ctx, "af", "a", level.All); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("all read with a replica cut off: %v", err)
	}
	if _, err := c.host(leader).svc.Write(ctx, "af", set("a", "3"), level.Quorum); err != nil {
		t.Fatalf("quorum write with a replica cut off: %v", err)
	}
}

// A deposed leader's appends are refused: while the leader is cut off,
// another replica takes the partition over with a higher ballot; back in
// touch, the old leader (which never heard of that ballot) tries to write,
// its replicas refuse, and nothing of the write survives.
func TestDeposedLeaderRefused(t *testing.T) {
	c := newCluster(t, 3)
	ctx := ctxFor(t, 20*time.Second)
	res, _ := c.host("h0").ring.Lookup(ctx, ring.HashKey([]byte("dp")), 3)
	replicas := []string{res.Replicas[0].Addr, res.Replicas[1].Addr, res.Replicas[2].Addr}
	old, usurper := c.host(replicas[0]).svc, c.host(replicas[1]).svc
	if _, err := old.Write(ctx, "dp", set("a", "1"), level.Quorum); err != nil {
		t.Fatal(err)
	}
	c.faults.Partition([]string{replicas[0]}, replicas[1:])
	up, _ := usurper.ps.get("dp")
	up.lead.Lock()
	err := usurper.establish(ctx, up, []string{replicas[1], replicas[0], replicas[2]})
	up.lead.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	c.faults.Heal()
	op, _ := old.ps.get("dp")
	op.lead.Lock()
	_, err = old.appendAndReplicate(ctx, op, WriteID{}, []Op{{Kind: OpSet, Name: "a", Value: []byte("deposed")}}, level.Quorum)
	op.lead.Unlock()
	if !errors.Is(err, ErrStaleBallot) {
		t.Fatalf("deposed leader's write: %v, want ErrStaleBallot", err)
	}
	for _, a := range replicas {
		r, err := c.host(a).svc.Read(ctx, "dp", "a", level.Quorum)
		if err != nil || string(r.Value) != "1" {
			t.Fatalf("read through %s after the refused write: %+v, %v", a, r, err)
		}
	}
}

// A replica that missed 500 transactions catches up along the hash chain.
func TestLaggingReplicaCatchesUp(t *testing.T) {
	c := newCluster(t, 3)
	ctx := ctxFor(t, 60*time.Second)
	res, _ := c.host("h0").ring.Lookup(ctx, ring.HashKey([]byte("lag")), 3)
	leader, lagger := res.Replicas[0].Addr, res.Replicas[2].Addr
	if _, err := c.host(leader).svc.Write(ctx, "lag", set("a", "0"), level.All); err != nil {
		t.Fatal(err)
	}
	c.faults.Partition([]string{leader}, []string{lagger})
	for i := 1; i <= 500; i++ {
		if _, err := c.host(leader).svc.Write(ctx, "lag", set("a", fmt.Sprint(i)), level.Quorum); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if most, total := c.host(leader).svc.Lag(); most < 500 || total < most {
		t.Errorf("the leader reports a lag of %d entries (%d in all), want at least 500", most, total)
	}
	c.faults.Heal()
	// Once the ring sees the lagging host again, an "all" read brings it
	// level.
	var r Record
	var err error
	for deadline := time.Now().Add(20 * time.Second); ; {
		if r, err = c.host(leader).svc.Read(ctx, "lag", "a", level.All); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || string(r.Value) != "500" {
		t.Fatalf("all read after healing: %+v, %v", r, err)
	}
	if most, _ := c.host(leader).svc.Lag(); most != 0 {
		t.Errorf("after the all read the leader reports a lag of %d entries", most)
	}
	local, err := c.host(lagger).svc.HandleReadLocal("lag", "a")
	if err != nil || string(local.Value) != "500" || local.Hash != r.Hash {
		t.Fatalf("lagging replica holds %+v, %v", local, err)
	}
}

// A partition created on a cluster of one host (its set is that host
// alone) keeps working as the cluster grows: whichever host leads it then
// adopts its log, and the set grows to N, so that a read at all succeeds.
func TestSingleHostGrows(t *testing.T) {
	c := newCluster(t, 1)
	ctx := ctxFor(t, 30*time.Second)
	keys := []string{"grow/a", "grow/b", "grow/c", "grow/d", "grow/e", "grow/f"}
	refs := map[string]TxRef{}
	for _, k := range keys {
		ref, err := c.host("h0").svc.Write(ctx, k, set("v", k), level.Quorum)
		if err != nil {
			t.Fatal(err)
		}
		refs[k] = ref
	}
	for _, addr := range []string{"h1", "h2"} {
		c.mu.Lock()
		c.addrs = append(c.addrs, addr)
		c.mu.Unlock()
		c.start(addr, store.NewMem(), true)
	}
	c.settle()
	for _, k := range keys {
		for {
			r, err := c.host("h2").svc.Read(ctx, k, "v", level.All)
			if err == nil {
				if string(r.Value) != k || r.Hash != refs[k].Hash {
					t.Fatalf("%s after growing = %+v", k, r)
				}
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%s: read at all after growing to 3 hosts: %v", k, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// List returns a partition's live records by prefix, in pages.
func TestList(t *testing.T) {
	c := newCluster(t, 3)
	svc := c.host("h1").svc
	ctx := ctxFor(t, 20*time.Second)
	var changes []Change
	for i := range 25 {
		changes = append(changes, Change{Name: fmt.Sprintf("d/%02d", i), Value: []byte{byte(i)}})
	}
	changes = append(changes, Change{Name: "i/1", Value: []byte("inode")})
	if _, err := svc.Write(ctx, "dir", changes, level.Quorum); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Write(ctx, "dir", []Change{{Name: "d/03", Delete: true}}, level.Quorum); err != nil {
		t.Fatal(err)
	}
	var names []string
	after := ""
	for pages := 0; ; pages++ {
		recs, more, err := c.host("h2").svc.List(ctx, "dir", "d/", after, 10, level.Quorum)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			names = append(names, r.Name)
			if want := r.Name[2:]; len(r.Value) != 1 || fmt.Sprintf("%02d", r.Value[0]) != want {
				t.Errorf("record %s lists value %v", r.Name, r.Value)
			}
		}
		if !more {
			if pages != 2 {
				t.Errorf("24 records in pages of 10 took %d pages", pages+1)
			}
			break
		}
		after = recs[len(recs)-1].Name
	}
	if len(names) != 24 || names[0] != "d/00" || names[3] != "d/04" || names[23] != "d/24" {
		t.Errorf("listed %v", names)
	}
	if _, _, err := svc.List(ctx, "dir", "d/", "", 0, level.Lazy); !errors.Is(err, ErrBadRequest) {
		t.Errorf("a lazy list: %v, want ErrBadRequest", err)
	}
	if _, _, err := svc.List(ctx, "dir", "d/", "", MaxList+1, level.Quorum); !errors.Is(err, ErrBadRequest) {
		t.Errorf("a list over MaxList: %v, want ErrBadRequest", err)
	}
}

// A check conditions a write on a record it does not change, and IfEmpty
// on a prefix holding no live record: what removing a directory needs.
func TestChecksAndIfEmpty(t *testing.T) {
	c := newCluster(t, 3)
	svc := c.host("h0").svc
	ctx := ctxFor(t, 20*time.Second)
	var zero Hash
	if _, err := svc.Write(ctx, "dir", set("d/a", "1"), level.Quorum); err != nil {
		t.Fatal(err)
	}
	// The tombstone may not be written while d/ holds a record.
	dead := []Change{{Name: "dead", Value: []byte("1"), IfMatch: &zero}}
	if _, err := svc.Do(ctx, Request{Partition: "dir", Kind: KindWrite, IfEmpty: "d/", Write: dead}); !errors.Is(err, ErrConflict) {
		t.Fatalf("IfEmpty with a record under the prefix: %v, want ErrConflict", err)
	}
	// A create checks that there is no tombstone.
	create := func(name string) error {
		_, err := svc.Write(ctx, "dir", []Change{{Name: "dead", Check: true, IfMatch: &zero}, {Name: name, Value: []byte("x"), IfMatch: &zero}}, level.Quorum)
		return err
	}
	if err := create("d/b"); err != nil {
		t.Fatalf("create with the check holding: %v", err)
	}
	if _, err := svc.Write(ctx, "dir", []Change{{Name: "d/a", Delete: true}, {Name: "d/b", Delete: true}}, level.Quorum); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Do(ctx, Request{Partition: "dir", Kind: KindWrite, IfEmpty: "d/", Write: dead}); err != nil {
		t.Fatalf("IfEmpty on an empty prefix: %v", err)
	}
	if err := create("d/c"); !errors.Is(err, ErrConflict) {
		t.Fatalf("create after the tombstone: %v, want ErrConflict", err)
	}
	if r, err := svc.Read(ctx, "dir", "dead", level.Quorum); err != nil || string(r.Value) != "1" {
		t.Fatalf("the check wrote its record: %+v, %v", r, err)
	}
	for _, req := range []Request{
		{Partition: "dir", Kind: KindWrite, Write: []Change{{Name: "x", Check: true}}},
		{Partition: "dir", Kind: KindWrite, Write: []Change{{Name: "x", Check: true, IfMatch: &zero}}},
		{Partition: "dir", Kind: KindWrite, Write: []Change{{Name: "x", Check: true, IfMatch: &zero, Value: []byte("v")}, {Name: "y"}}},
	} {
		if _, err := svc.Do(ctx, req); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%+v: %v, want ErrBadRequest", req.Write, err)
		}
	}
}

// A leader sends an entry to its followers while it syncs it, and counts
// itself towards the commit only once its sync is done: with the leader's
// disk slow, a quorum write commits through both followers without
// waiting for it, but with one follower down it waits; with the leader's
// disk broken, the two followers commit it.
func TestLeaderCountsItselfOnceDurable(t *testing.T) {
	c := newClusterGated(t, 3, true)
	ctx := ctxFor(t, 20*time.Second)
	if _, err := c.host("h0").svc.Write(ctx, "ld", set("a", "1"), level.All); err != nil {
		t.Fatal(err)
	}
	res, err := c.host("h0").ring.Lookup(ctx, ring.HashKey([]byte("ld")), 3)
	if err != nil {
		t.Fatal(err)
	}
	leader, follower, victim := res.Replicas[0].Addr, res.Replicas[1].Addr, res.Replicas[2].Addr
	gate := c.gates[leader]
	write := func(v string) chan error {
		done := make(chan error, 1)
		go func() {
			_, err := c.host(follower).svc.Write(ctx, "ld", set("a", v), level.Quorum)
			done <- err
		}()
		return done
	}

	// Slow disk, both followers up: committed without the leader's sync.
	gate.hold.Lock()
	select {
	case err := <-write("2"):
		if err != nil {
			t.Errorf("a quorum write while the leader's sync is held: %v", err)
		}
	case <-time.After(5 * time.Second):
		gate.hold.Unlock()
		t.Fatal("a quorum write waited for the leader's sync with both followers up")
	}

	// Slow disk, one follower down: no commit before the sync.
	c.kill(victim)
	done := write("3")
	select {
	case err := <-done:
		t.Fatalf("a quorum write returned (%v) while the leader's sync and one follower were missing", err)
	case <-time.After(300 * time.Millisecond):
	}
	gate.hold.Unlock()
	if err := <-done; err != nil {
		t.Fatalf("the quorum write once the sync was done: %v", err)
	}

	// Broken disk on the leader, both followers up: committed by them.
	c.restart(victim)
	c.settle()
	gate.fail.Store(true)
	if err := <-write("4"); err != nil {
		t.Fatalf("a quorum write with the leader's disk broken and both followers up: %v", err)
	}
	gate.fail.Store(false)
	if r, err := c.host(victim).svc.Read(ctx, "ld", "a", level.Quorum); err != nil || string(r.Value) != "4" {
		t.Errorf("quorum read: %q, %v; want 4", r.Value, err)
	}
}
