package gc_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/gc"
	"github.com/difuse/difuse/heal"
	"github.com/difuse/difuse/inode"
	"github.com/difuse/difuse/internal/memcluster"
	"github.com/difuse/difuse/ring"
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
	w := &world{c: memcluster.Start(t, 3), collectors: memSweepers{}}
	lister := memLister{}
	for _, h := range w.c.Hosts {
		members := func(ctx context.Context) ([]ring.Ref, error) { return ring.Members(ctx, h.RingTransport, []string{h.Addr}) }
		hl, err := heal.New(heal.Config{Addr: h.Addr}, members, h.Ring, h.Log, h.Blocks, h.BlockTransport, nil)
		if err != nil {
			t.Fatal(err)
		}
		lister[h.Addr] = hl
		c, err := gc.New(gc.Config{Addr: h.Addr, Grace: grace}, members, lister, h.Log, w.collectors, h.Blocks.Local())
		if err != nil {
			t.Fatal(err)
		}
		w.collectors[h.Addr] = c
	}
	h0 := w.c.Hosts[0]
	w.fs = inode.New(h0.Log, h0.Blocks, inode.Options{Chunk: blockstore.ChunkOptions{Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10}})
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
	if _, err := w.fs.ReadAt(ctx, a, buf, 0); err != nil && err != io.EOF {
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
