package gc_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/gc"
	"github.com/difuse/difuse/heal"
	"github.com/difuse/difuse/inode"
	"github.com/difuse/difuse/internal/memcluster"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/txlog"
)

// memSweepers reaches the other hosts' collectors in memory.
type memSweepers map[string]*gc.Collector

func (m memSweepers) Sweep(ctx context.Context, to string, req gc.SweepRequest) (blockstore.SweepStats, error) {
	return m[to].HandleSweep(ctx, req)
}

// memLister reaches the other hosts' healers' listings in memory.
type memLister map[string]*heal.Healer

func (m memLister) Items(_ context.Context, to string, kind heal.Kind, arc heal.Arc, after string, limit int) ([]heal.Item, bool, error) {
	return m[to].HandleItems(kind, arc, after, limit)
}

type world struct {
	c          *memcluster.Cluster
	collectors memSweepers
	fs         *inode.FS
}

func newWorld(t *testing.T, grace time.Duration) *world {
	return newSkewedWorld(t, grace, nil)
}

// newSkewedWorld is newWorld, with host h1's clock skew ahead, if set.
func newSkewedWorld(t *testing.T, grace time.Duration, skew *time.Duration) *world {
	w := &world{c: memcluster.Start(t, 3), collectors: memSweepers{}}
	lister := memLister{}
	for _, h := range w.c.Hosts {
		members := func(ctx context.Context) ([]ring.Ref, error) {
			return ring.Members(ctx, h.RingTransport, []string{h.Addr})
		}
		hl, err := heal.New(heal.Config{Addr: h.Addr}, members, h.Ring, h.Log, h.Blocks, nil)
		if err != nil {
			t.Fatal(err)
		}
		lister[h.Addr] = hl
		cfg := gc.Config{Addr: h.Addr, Grace: grace}
		if h.Addr == "h1" && skew != nil {
			cfg.Clock = func() time.Time { return time.Now().Add(*skew) }
		}
		c, err := gc.New(cfg, members, lister, h.Log, w.collectors, h.Blocks)
		if err != nil {
			t.Fatal(err)
		}
		w.collectors[h.Addr] = c
	}
	h0 := w.c.Hosts[0]
	var err error
	if w.fs, err = inode.New(h0.Log, h0.Blocks, inode.Options{Chunk: blockstore.ChunkOptions{Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10}, PageShift: 20}); err != nil {
		t.Fatal(err)
	}
	if err := w.fs.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) write(t *testing.T, name string, data []byte) {
	t.Helper()
	ctx := context.Background()
	id, _, err := w.fs.Create(ctx, inode.Root, name, inode.NewAttr{Type: inode.TypeFile, Mode: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	wr := w.fs.NewWriter(id)
	wr.WriteAt(data, 0)
	if _, err := wr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func (w *world) read(t *testing.T, name string) []byte {
	t.Helper()
	ctx := context.Background()
	e, err := w.fs.Lookup(ctx, inode.Root, name)
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := w.fs.GetAttr(ctx, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, a.Size)
	if _, err := w.fs.ReadAt(ctx, e.ID, a, buf, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return buf
}

// blocksHeld counts the blocks on every host.
func (w *world) blocksHeld() int64 {
	var n int64
	for _, h := range w.c.Hosts {
		h.Blocks.Wait()
		b, _ := h.Blocks.Local().Count()
		n += b
	}
	return n
}

func random(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// A cycle frees, on every replica, the blocks of a deleted file that no
// other file shares, and nothing else; a dry run only counts them; within
// the grace time nothing is freed.
func TestCollect(t *testing.T) {
	w := newWorld(t, time.Hour)
	ctx := context.Background()
	a, b := random(1<<20, 1), random(1<<20, 2)
	w.write(t, "a", a)
	w.write(t, "copy of a", a)
	w.write(t, "b", b)
	withB := w.blocksHeld()
	if err := w.fs.Unlink(ctx, inode.Root, "a"); err != nil {
		t.Fatal(err)
	}
	if err := w.fs.Unlink(ctx, inode.Root, "b"); err != nil {
		t.Fatal(err)
	}
	c := w.collectors["h0"]
	rep, err := c.Collect(ctx, false)
	if err != nil || rep.Freed != 0 || rep.Hosts != 3 || rep.Partitions == 0 || rep.Referenced == 0 {
		t.Fatalf("within the grace time: %+v, %v", rep, err)
	}
	// b's blocks are garbage, kept only for the grace time, on 3 replicas.
	if rep.Recent == 0 || rep.RecentBytes != 3*int64(len(b)) {
		t.Fatalf("within the grace time: %d recent block copies of %d bytes, want %d bytes", rep.Recent, rep.RecentBytes, 3*len(b))
	}

	w2 := newWorld(t, time.Nanosecond)
	w2.write(t, "a", a)
	w2.write(t, "copy of a", a)
	before := w2.blocksHeld()
	w2.write(t, "b", b)
	withB = w2.blocksHeld()
	if err := w2.fs.Unlink(ctx, inode.Root, "a"); err != nil {
		t.Fatal(err)
	}
	if err := w2.fs.Unlink(ctx, inode.Root, "b"); err != nil {
		t.Fatal(err)
	}
	c = w2.collectors["h1"]
	rep, err = c.Collect(ctx, true)
	if err != nil || rep.Freed != withB-before || !rep.DryRun {
		t.Fatalf("dry run: %+v (want %d freed), %v", rep, withB-before, err)
	}
	if got := w2.blocksHeld(); got != withB {
		t.Fatalf("a dry run freed blocks: %d held, %d before", got, withB)
	}
	rep, err = c.Collect(ctx, false)
	if err != nil || rep.Freed != withB-before || len(rep.Failed) != 0 {
		t.Fatalf("collect: %+v (want %d freed), %v", rep, withB-before, err)
	}
	if got := w2.blocksHeld(); got != before {
		t.Fatalf("after the collection %d blocks held, want %d", got, before)
	}
	if !bytes.Equal(w2.read(t, "copy of a"), a) {
		t.Fatal("the copy of a reads back different")
	}
	st := c.Stats()
	if st.Cycles != 2 || st.Last == nil || st.Last.Freed != rep.Freed || st.State != "idle" {
		t.Errorf("stats %+v", st)
	}
}

// Collections running while writers keep writing the same contents again
// (the same blocks) and deleting other files never take a block a file
// refers to: at the end every file reads back as written.
func TestCollectUnderWrites(t *testing.T) {
	// The grace time must be longer than any write takes from storing its
	// blocks to committing its inode, which under -race on a loaded
	// machine can pass 300 ms.
	w := newWorld(t, time.Second)
	ctx := context.Background()
	contents := [][]byte{random(300<<10, 11), random(300<<10, 12), random(300<<10, 13)}
	done := make(chan struct{})
	var freed int64
	go func() {
		defer close(done)
		for range 12 {
			rep, err := w.collectors["h2"].Collect(ctx, false)
			if err != nil {
				t.Error(err)
				return
			}
			freed += rep.Freed
			time.Sleep(250 * time.Millisecond)
		}
	}()
	live := map[string][]byte{}
	rng := rand.New(rand.NewPCG(5, 5))
	for i := 0; ; i++ {
		select {
		case <-done:
		default:
			// A file of its own content, deleted at once: garbage.
			w.write(t, "garbage", random(200<<10, uint64(100+i)))
			if err := w.fs.Unlink(ctx, inode.Root, "garbage"); err != nil {
				t.Fatal(err)
			}
			name := "f" + string(rune('a'+i%26)) + time.Now().Format("150405.000000")
			data := contents[rng.IntN(len(contents))]
			w.write(t, name, data)
			live[name] = data
			if len(live) > 3 {
				for victim := range live {
					if victim != name {
						if err := w.fs.Unlink(ctx, inode.Root, victim); err != nil {
							t.Fatal(err)
						}
						delete(live, victim)
						break
					}
				}
			}
			continue
		}
		break
	}
	for name, data := range live {
		if got := w.read(t, name); !bytes.Equal(got, data) {
			t.Fatalf("%s reads back different after the collections", name)
		}
	}
	if freed == 0 {
		t.Error("the collections freed none of the garbage")
	}
	t.Logf("%d files live at the end; the collections freed %d block copies", len(live), freed)
}

// racingSweepers writes a file before the first sweep it passes on: the
// write lands between a cycle's mark and its sweeps.
type racingSweepers struct {
	memSweepers
	once  sync.Once
	write func()
}

func (r *racingSweepers) Sweep(ctx context.Context, to string, req gc.SweepRequest) (blockstore.SweepStats, error) {
	r.once.Do(r.write)
	return r.memSweepers.Sweep(ctx, to, req)
}

// The race that loses data in collectors without a grace time: a block no
// file refers to at the mark is written again (its replicas hold it, so no
// bytes move) and referred to before the sweep. The write marked the block
// used on every replica, so no sweep takes it.
func TestCollectRacingWrite(t *testing.T) {
	w := newWorld(t, 200*time.Millisecond)
	ctx := context.Background()
	content := random(512<<10, 21)
	w.write(t, "old", content)
	if err := w.fs.Unlink(ctx, inode.Root, "old"); err != nil {
		t.Fatal(err)
	}
	w.blocksHeld()
	time.Sleep(300 * time.Millisecond) // the blocks are garbage now, past the grace time
	racing := &racingSweepers{memSweepers: w.collectors, write: func() { w.write(t, "new", content) }}
	h := w.c.Hosts[0]
	members := func(ctx context.Context) ([]ring.Ref, error) {
		return ring.Members(ctx, h.RingTransport, []string{h.Addr})
	}
	lister := memLister{}
	for _, x := range w.c.Hosts {
		hl, err := heal.New(heal.Config{Addr: x.Addr}, members, x.Ring, x.Log, x.Blocks, nil)
		if err != nil {
			t.Fatal(err)
		}
		lister[x.Addr] = hl
	}
	c, err := gc.New(gc.Config{Addr: h.Addr, Grace: 200 * time.Millisecond}, members, lister, h.Log, racing, h.Blocks)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Collect(ctx, false); err != nil {
		t.Fatal(err)
	}
	w.blocksHeld()
	e, err := w.fs.Lookup(ctx, inode.Root, "new")
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := w.fs.GetAttr(ctx, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	ext, err := w.fs.Extents(ctx, e.ID, a, 0, a.Size)
	if err != nil || len(ext) == 0 {
		t.Fatalf("the new file's extents: %d, %v", len(ext), err)
	}
	var hashes []blockstore.Hash
	for _, x := range ext {
		hashes = append(hashes, x.Block)
	}
	held, of, err := h.Blocks.Count(ctx, hashes)
	if err != nil {
		t.Fatal(err)
	}
	for i := range hashes {
		if held[i] != of[i] {
			t.Errorf("block %s of the new file is on %d of its %d replicas after the collection", hashes[i], held[i], of[i])
		}
	}
	if !bytes.Equal(w.read(t, "new"), content) {
		t.Fatal("the new file reads back different")
	}
}

// A block stored through the block API is pinned, and a pinned block is
// kept though no file refers to it; once unpinned, a cycle frees it.
func TestPinsKeepBlocks(t *testing.T) {
	w := newWorld(t, time.Nanosecond)
	ctx := context.Background()
	h0 := w.c.Hosts[0]
	data := random(100<<10, 9)
	h, err := h0.Blocks.Set(ctx, data, level.All)
	if err != nil {
		t.Fatal(err)
	}
	pin := func(on bool) {
		c := txlog.Change{Name: h.String(), Value: []byte{1}}
		if !on {
			c = txlog.Change{Name: h.String(), Delete: true}
		}
		if _, err := h0.Log.Do(ctx, txlog.Request{Partition: gc.PinPartition(h), Level: level.Quorum, Kind: txlog.KindWrite, Write: []txlog.Change{c}}); err != nil {
			t.Fatal(err)
		}
	}
	pin(true)
	held := w.blocksHeld()
	rep, err := w.collectors["h1"].Collect(ctx, false)
	if err != nil || rep.Pins != 1 || rep.Freed != 0 {
		t.Fatalf("a cycle with the block pinned: %+v, %v", rep, err)
	}
	if got := w.blocksHeld(); got != held {
		t.Fatalf("the pinned block went: %d copies held, %d before", got, held)
	}
	if got, err := h0.Blocks.Get(ctx, h, level.Leader); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the pinned block reads %d bytes, %v", len(got), err)
	}
	pin(false)
	if rep, err = w.collectors["h2"].Collect(ctx, false); err != nil || rep.Freed != held {
		t.Fatalf("a cycle after the unpin: %+v (want %d freed), %v", rep, held, err)
	}
}

// A collector whose clock runs hours ahead does not make the other hosts
// sweep blocks used within the grace time: each host judges a block's age
// by its own clock.
func TestCollectorClockSkew(t *testing.T) {
	skew := 2 * time.Hour
	w := newSkewedWorld(t, time.Hour, &skew)
	ctx := context.Background()
	h0 := w.c.Hosts[0]
	// A block a write has just stored, and whose inode it has not
	// committed yet: referenced by nothing, used a moment ago.
	h, err := h0.Blocks.Set(ctx, random(64<<10, 5), level.All)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.collectors["h1"].Collect(ctx, false); err != nil {
		t.Fatal(err)
	}
	for _, host := range []int{0, 2} {
		w.c.Hosts[host].Blocks.Wait()
		if ok, err := w.c.Hosts[host].Blocks.Local().Has(h); err != nil || !ok {
			t.Errorf("host %d swept a block used a moment ago, asked by a collector two hours ahead (%v)", host, err)
		}
	}
}
