package heal_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/heal"
	"github.com/difuse/difuse/internal/memcluster"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/txlog"
)

// memPeers reaches the other healers of an in-memory cluster, through its
// fault model.
type memPeers struct {
	from    string
	c       *memcluster.Cluster
	healers map[string]*heal.Healer
}

func (p memPeers) Digests(_ context.Context, to string, kind heal.Kind, arcs []heal.Arc) ([]heal.Digest, error) {
	if err := p.c.Faults.Check(p.from, to); err != nil {
		return nil, err
	}
	return p.healers[to].HandleDigests(kind, arcs)
}

func (p memPeers) Items(_ context.Context, to string, kind heal.Kind, arc heal.Arc, after string, limit int) ([]heal.Item, bool, error) {
	if err := p.c.Faults.Check(p.from, to); err != nil {
		return nil, false, err
	}
	return p.healers[to].HandleItems(kind, arc, after, limit)
}

// testWriter sends logs to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(b)))
	return len(b), nil
}

// world is an in-memory cluster with a healer on every host.
type world struct {
	t       *testing.T
	c       *memcluster.Cluster
	healers map[string]*heal.Healer
	values  map[string][]byte          // partition → value written
	blocks  map[blockstore.Hash][]byte // block → data
}

func newWorld(t *testing.T, n int) *world {
	w := &world{t: t, c: memcluster.Start(t, n), healers: map[string]*heal.Healer{}, values: map[string][]byte{}, blocks: map[blockstore.Hash][]byte{}}
	for _, h := range w.c.Hosts {
		w.addHealer(h)
	}
	return w
}

func (w *world) addHealer(h *memcluster.Host) {
	members := func(ctx context.Context) ([]ring.Ref, error) {
		seeds := append([]string{"h0"}, h.Ring.KnownHosts()...)
		if h.Ring.Member() {
			seeds[0] = h.Addr
		}
		return ring.Members(ctx, h.RingTransport, seeds)
	}
	logger := slog.New(slog.NewTextHandler(testWriter{w.t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("host", h.Addr)
	hl, err := heal.New(heal.Config{Addr: h.Addr, Grace: 100 * time.Millisecond, CallTimeout: time.Second, ScrubBytes: 1 << 30, Logger: logger},
		members, h.Ring, h.Log, h.Blocks, memPeers{h.Addr, w.c, w.healers})
	if err != nil {
		w.t.Fatal(err)
	}
	w.healers[h.Addr] = hl
}

func (w *world) add() *memcluster.Host {
	h := w.c.Add()
	w.addHealer(h)
	return h
}

// write stores parts partitions and blocks blocks at quorum through random
// hosts among the first of the cluster's (all if none is given).
func (w *world) write(parts, blocks int, first ...int) {
	through := w.c.Hosts
	if len(first) > 0 {
		through = through[:first[0]]
	}
	ctx := context.Background()
	base := len(w.values)
	rng := rand.New(rand.NewPCG(uint64(base), 7))
	for i := range parts {
		name := fmt.Sprintf("kv/p%d", base+i)
		v := fmt.Appendf(nil, "value of %s", name)
		h := through[rng.IntN(len(through))]
		if _, err := h.Log.Write(ctx, name, []txlog.Change{{Name: "", Value: v}}, level.Quorum); err != nil {
			w.t.Fatal(err)
		}
		w.values[name] = v
	}
	for range blocks {
		data := make([]byte, 1000+rng.IntN(5000))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		h := through[rng.IntN(len(through))]
		hash, err := h.Blocks.Set(ctx, data, level.Quorum)
		if err != nil {
			w.t.Fatal(err)
		}
		w.blocks[hash] = data
	}
	for _, h := range w.c.Hosts {
		h.Blocks.Wait() // replicas not waited for get theirs in the background
	}
}

// heal makes passes on every member's healer until one round finds them
// all settled.
func (w *world) heal() {
	w.t.Helper()
	ctx := context.Background()
	for round := range 40 {
		all := true
		for _, h := range w.c.Hosts {
			if !h.Ring.Member() || w.c.Faults.Down(h.Addr) {
				continue
			}
			settled, err := w.healers[h.Addr].Pass(ctx)
			if err != nil {
				w.t.Fatal(err)
			}
			all = all && settled
		}
		if all {
			w.t.Logf("settled after %d rounds", round+1)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, h := range w.c.Hosts {
		w.t.Logf("%s: %+v", h.Addr, w.healers[h.Addr].Stats())
	}
	w.t.Fatal("healing did not settle in 40 rounds")
}

// check verifies that every partition and block sits on exactly the hosts
// the ring names, as the hosts' stores show, and reads back.
func (w *world) check() {
	w.t.Helper()
	ctx := context.Background()
	var members []*memcluster.Host
	for _, h := range w.c.Hosts {
		if h.Ring.Member() && !w.c.Faults.Down(h.Addr) {
			members = append(members, h)
		}
	}
	placed := func(key ring.ID) []string {
		res, err := members[0].Ring.Lookup(ctx, key, 3)
		if err != nil {
			w.t.Fatal(err)
		}
		var out []string
		for _, r := range res.Replicas {
			out = append(out, r.Addr)
		}
		slices.Sort(out)
		return out
	}
	heads := map[string]map[string]txlog.Hash{} // partition → host → head
	for _, h := range members {
		err := h.Log.Partitions(func(p txlog.Held) error {
			if heads[p.Name] == nil {
				heads[p.Name] = map[string]txlog.Hash{}
			}
			heads[p.Name][h.Addr] = p.LastHash
			cfg := slices.Sorted(slices.Values(p.Config))
			if want := placed(ring.HashKey([]byte(p.Name))); !slices.Equal(cfg, want) {
				w.t.Errorf("partition %s: %s's replica set in force is %v, the ring places it on %v", p.Name, h.Addr, cfg, want)
			}
			return nil
		})
		if err != nil {
			w.t.Fatal(err)
		}
	}
	for name := range w.values {
		var holders []string
		var first txlog.Hash
		for addr, head := range heads[name] {
			holders = append(holders, addr)
			if first.IsZero() {
				first = head
			} else if head != first {
				w.t.Errorf("%s: replicas' logs differ: %v", name, heads[name])
			}
		}
		slices.Sort(holders)
		if want := placed(ring.HashKey([]byte(name))); !slices.Equal(holders, want) {
			w.t.Errorf("partition %s is held by %v, the ring places it on %v", name, holders, want)
		}
		r, err := members[0].Log.Read(ctx, name, "", level.Quorum)
		if err != nil || !bytes.Equal(r.Value, w.values[name]) {
			w.t.Errorf("partition %s reads %q, %v", name, r.Value, err)
		}
	}
	for hash, data := range w.blocks {
		var holders []string
		for _, h := range members {
			if ok, err := h.Blocks.Local().Has(hash); err != nil {
				w.t.Fatal(err)
			} else if ok {
				holders = append(holders, h.Addr)
			}
		}
		slices.Sort(holders)
		if want := placed(ring.ID(hash)); !slices.Equal(holders, want) {
			w.t.Errorf("block %s is held by %v, the ring places it on %v", hash, holders, want)
		}
		got, err := members[0].Blocks.Get(ctx, hash, level.Quorum)
		if err != nil || !bytes.Equal(got, data) {
			w.t.Errorf("block %s: %v", hash, err)
		}
	}
}

func TestArcContains(t *testing.T) {
	id := func(b byte) ring.ID { var x ring.ID; x[0] = b; return x }
	for _, c := range []struct {
		lo, hi, x byte
		want      bool
	}{
		{10, 20, 15, true}, {10, 20, 20, true}, {10, 20, 10, false}, {10, 20, 25, false},
		{200, 20, 250, true}, {200, 20, 5, true}, {200, 20, 100, false}, {7, 7, 99, true},
	} {
		if got := (heal.Arc{Lo: id(c.lo), Hi: id(c.hi)}).Contains(id(c.x)); got != c.want {
			t.Errorf("(%d, %d] contains %d: %v, want %v", c.lo, c.hi, c.x, got, c.want)
		}
	}
}

// TestJoinRebalances: after two hosts join a cluster of three, healing
// puts every partition and block on exactly the hosts the ring names, and
// everything reads back.
func TestJoinRebalances(t *testing.T) {
	w := newWorld(t, 3)
	w.write(60, 40)
	w.add()
	w.add()
	w.heal()
	w.check()
	var sent, dropped int64
	for _, hl := range w.healers {
		s := hl.Stats()
		sent += s.BlocksSent
		dropped += s.BlocksDropped + s.PartitionsDropped
	}
	if sent == 0 || dropped == 0 {
		t.Errorf("%d blocks sent and %d items dropped: the join moved nothing", sent, dropped)
	}
}

// TestLaggingReplicaLevelled: a host cut off while 200 transactions are
// written to 20 partitions it holds, and 20 new partitions are created, is
// brought level by healing alone, with no request touching them.
func TestLaggingReplicaLevelled(t *testing.T) {
	w := newWorld(t, 3)
	w.write(20, 0)
	w.c.Faults.Partition([]string{"h0", "h1"}, []string{"h2"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 200 {
		name := fmt.Sprintf("kv/p%d", i%20)
		v := fmt.Appendf(nil, "update %d", i)
		if _, err := w.c.Hosts[i%2].Log.Write(ctx, name, []txlog.Change{{Name: "", Value: v}}, level.Quorum); err != nil {
			t.Fatal(err)
		}
		w.values[name] = v
	}
	w.write(20, 10, 2)
	w.c.Faults.Heal()
	w.c.WaitSettled()
	w.heal()
	w.check()
}

// TestDamagedBlocksRepaired: a block deleted from one replica's disk and
// another overwritten with garbage are found and repaired by healing, with
// no read touching them.
func TestDamagedBlocksRepaired(t *testing.T) {
	w := newWorld(t, 3)
	w.write(0, 20)
	var hashes []blockstore.Hash
	for h := range w.blocks {
		hashes = append(hashes, h)
	}
	lost, damaged := hashes[0], hashes[1]
	local := func(addr string) *blockstore.Local { return w.c.Hosts[addr[1]-'0'].Blocks.Local() }
	holderOf := func(h blockstore.Hash) string {
		res, _ := w.c.Hosts[0].Ring.Lookup(context.Background(), ring.ID(h), 3)
		return res.Replicas[2].Addr
	}
	if err := local(holderOf(lost)).Delete(lost, true); err != nil {
		t.Fatal(err)
	}
	path := local(holderOf(damaged)).Path(damaged)
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.heal()
	w.check()
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, w.blocks[damaged]) {
		t.Errorf("the damaged copy was not replaced: %v", err)
	}
	var corrupt int64
	for _, hl := range w.healers {
		corrupt += hl.Stats().BlocksCorrupt
	}
	if corrupt != 1 {
		t.Errorf("%d damaged blocks found, want 1", corrupt)
	}
}

// TestLeaveHandsOff: a host that leaves the ring hands off everything it
// holds; then it holds nothing, and the others hold everything where the
// ring places it.
func TestLeaveHandsOff(t *testing.T) {
	w := newWorld(t, 4)
	w.write(40, 30)
	leaver := w.c.Hosts[3]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	leaver.Ring.Leave(ctx)
	w.c.WaitSettled()
	if err := w.healers[leaver.Addr].Leave(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond) // past the grace time the others give the host that left
	w.heal()
	w.check()
}

// TestJoinCopiesFirst: a host about to join copies what the ring will
// place on it from the hosts that hold it now; once it has joined, the
// passes find little left to send.
func TestJoinCopiesFirst(t *testing.T) {
	w := newWorld(t, 3)
	w.write(60, 40)
	h := w.c.NewHost()
	w.addHealer(h)
	ctx := context.Background()
	refs, err := ring.Members(ctx, h.RingTransport, []string{"h0"})
	if err != nil {
		t.Fatal(err)
	}
	copied, missed := w.healers[h.Addr].Join(ctx, refs, h.Ring.OwnRefs())
	if missed > 0 || copied == 0 {
		t.Fatalf("copied %d items, missed %d", copied, missed)
	}
	// What it holds now is what the ring with it in places on it.
	var future ring.Cache
	future.Update(append(refs, h.Ring.OwnRefs()...))
	want := 0
	for name := range w.values {
		if res, _ := future.Lookup(ring.HashKey([]byte(name)), 3); slices.ContainsFunc(res.Replicas, func(r ring.Ref) bool { return r.Addr == h.Addr }) {
			want++
		}
	}
	for hash := range w.blocks {
		res, _ := future.Lookup(ring.ID(hash), 3)
		if slices.ContainsFunc(res.Replicas, func(r ring.Ref) bool { return r.Addr == h.Addr }) {
			want++
			if ok, _ := h.Blocks.Local().Has(hash); !ok {
				t.Errorf("block %s not copied", hash)
			}
		}
	}
	if copied != want {
		t.Errorf("copied %d items, the ring will place %d on the host", copied, want)
	}
	w.c.Join(h)
	w.heal()
	w.check()
	if s := w.healers["h0"].Stats(); s.BlocksSent > 0 {
		t.Logf("h0 still sent %d blocks after the join", s.BlocksSent)
	}
}

// TestGoneAndBack: a host killed for good loses its place once the grace
// time is over, and its data is copied to the hosts left; when it comes
// back after all, the hosts that stood in for it hand its share back and
// drop their copies.
func TestGoneAndBack(t *testing.T) {
	w := newWorld(t, 4)
	w.write(40, 30)
	w.c.Faults.Kill("h3")
	w.c.WaitSettled()
	time.Sleep(150 * time.Millisecond) // past the grace time
	w.heal()
	w.check() // on 3 of the 3 hosts left: everything everywhere
	w.c.Faults.Revive("h3")
	deadline := time.Now().Add(10 * time.Second)
	for {
		refs, err := ring.Members(context.Background(), w.c.Hosts[0].RingTransport, []string{"h0"})
		if err == nil && len(refs) == 4*8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("h3 is not back in the ring: %d vnodes, %v", len(refs), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.c.WaitSettled()
	w.heal()
	w.check()
}
