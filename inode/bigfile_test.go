package inode

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/txlog"
)

// meter counts the bytes an FS sends: the blocks it stores and the values
// it writes to the logs.
type meter struct {
	Log
	Blocks
	blockBytes, blocks, recordBytes atomic.Int64
}

func (m *meter) Do(ctx context.Context, req txlog.Request) (txlog.Response, error) {
	for _, c := range req.Write {
		m.recordBytes.Add(int64(len(c.Name) + len(c.Value)))
	}
	return m.Log.Do(ctx, req)
}

func (m *meter) Set(ctx context.Context, data []byte, l level.Level) (blockstore.Hash, error) {
	m.blockBytes.Add(int64(len(data)))
	m.blocks.Add(1)
	return m.Blocks.Set(ctx, data, l)
}

// sent returns the bytes sent so far.
func (m *meter) sent() int64 { return m.blockBytes.Load() + m.recordBytes.Load() }

// metered returns a filesystem over base's cluster whose traffic m
// counts, with the options given.
func metered(t *testing.T, base *FS, opts Options) (*FS, *meter) {
	t.Helper()
	m := &meter{Log: base.log, Blocks: base.blocks}
	return mustFS(t, m, m, opts), m
}

// A 16 GiB sparse file takes 1,000 random 4 KiB writes, each flushed on
// its own: each flush sends about what it wrote (its block, the page it
// changes and the inode), never the file; no zeros are stored; the file
// reads back as a model of it says.
func TestSparseRandomWrites(t *testing.T) {
	const size = 16 << 30
	writes := 1000
	if testing.Short() {
		writes = 200
	}
	base := newFS(t, 3)[0]
	fs, m := metered(t, base, Options{}) // default blocks and pages: 64 MiB spans
	ctx := ctxT(t)
	id := newFile(t, fs, "sparse")
	if _, err := fs.Setattr(ctx, id, SetAttr{Size: new(uint64(size))}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[int64][]byte{} // 4 KiB-aligned pages of the model, by offset
	worst := int64(0)
	for i := range writes {
		off := rng.Int64N(size/4096) * 4096
		data := random(4096, byte(i))
		before := m.sent()
		w := fs.NewWriter(id)
		w.WriteAt(data, off)
		a, err := w.Flush(ctx)
		if err != nil {
			t.Fatalf("write %d at %d: %v", i, off, err)
		}
		if a.Size != size || !a.Paged() {
			t.Fatalf("write %d: size %d, paged %v", i, a.Size, a.Paged())
		}
		model[off] = data
		worst = max(worst, m.sent()-before)
	}
	// A write's block is 4 KiB, or up to three when it falls next to
	// earlier ones and they are cut again; its page holds a few extents
	// of 48 bytes; the inode lists 256 pages at most.
	if worst > 32<<10 {
		t.Errorf("the costliest 4 KiB flush sent %d bytes", worst)
	}
	t.Logf("%d flushes sent %d bytes (%d in %d blocks), the costliest %d", writes, m.sent(), m.blockBytes.Load(), m.blocks.Load(), worst)
	if m.blockBytes.Load() > int64(writes)*4096*2 {
		t.Errorf("%d bytes of blocks stored for %d writes of 4 KiB", m.blockBytes.Load(), writes)
	}
	// Read back through another filesystem: the written pages, and the
	// holes beside them.
	r := mustFS(t, base.log, base.blocks, Options{})
	a, _, err := r.GetAttr(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3*4096)
	checked := 0
	for off, want := range model {
		if checked == 100 {
			break
		}
		checked++
		if off < 4096 || off+8192 > size {
			continue
		}
		if _, err := r.ReadAt(ctx, id, a, buf, off-4096); err != nil {
			t.Fatal(err)
		}
		for k, o := range []int64{off - 4096, off, off + 4096} {
			exp := model[o]
			if exp == nil {
				exp = make([]byte, 4096)
			}
			if o == off {
				exp = want
			}
			if !bytes.Equal(buf[k*4096:(k+1)*4096], exp) {
				t.Fatalf("at %d: the bytes differ from the model", o)
			}
		}
	}
}

// A small change in the middle of a large dense file rewrites the blocks
// around it and no more: the cuts line up again past it, and the extents
// before and after are kept.
func TestInPlaceChangeCost(t *testing.T) {
	base := newFS(t, 3)[0]
	fs, m := metered(t, base, Options{Chunk: testChunks, PageShift: testPageShift})
	ctx := ctxT(t)
	id := newFile(t, fs, "dense")
	want := random(32<<20, 9)
	w := fs.NewWriter(id)
	w.WriteAt(want, 0)
	a, err := w.Flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := extentsOf(t, fs, id, a)
	for _, off := range []int64{0, 7 << 20, 16<<20 + 12345, int64(len(want)) - 4096} {
		sent := m.sent()
		patch := random(4096, byte(off))
		copy(want[off:], patch)
		w := fs.NewWriter(id)
		w.WriteAt(patch, off)
		if a, err = w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		// At most a few blocks of 256 KiB are cut again, and a page or
		// two of 1 MiB of the file (a few hundred bytes each) written.
		if cost := m.sent() - sent; cost > 4*int64(testChunks.Max)+16<<10 {
			t.Errorf("a 4 KiB change at %d sent %d bytes", off, cost)
		}
		after := extentsOf(t, fs, id, a)
		kept := 0
		old := map[Extent]bool{}
		for _, e := range before {
			old[e] = true
		}
		for _, e := range after {
			if old[e] {
				kept++
			}
		}
		if kept < len(before)-6 {
			t.Errorf("a change at %d kept %d of %d extents", off, kept, len(before))
		}
		before = after
	}
	if got := readAll(t, mustFS(t, base.log, base.blocks, Options{}), id); !bytes.Equal(got, want) {
		t.Fatal("the file reads back different")
	}
}

// Random writes, holes, zeros and truncates, flushed at random, through
// unpaged and paged files alike: after each flush the file reads as the
// model says, through another filesystem, and its extents are sorted,
// disjoint, within the size, and none holds only zeros.
func TestRewriteMatchesModel(t *testing.T) {
	fss := newFS(t, 3)
	fs, r := fss[0], fss[1]
	ctx := ctxT(t)
	rounds := 300
	if testing.Short() {
		rounds = 80
	}
	rng := rand.New(rand.NewPCG(3, 4))
	id := newFile(t, fs, "f")
	var model []byte
	w := fs.NewWriter(id)
	for i := range rounds {
		switch k := rng.IntN(10); {
		case k < 6: // a write somewhere near the data, or past it
			n := 1 + rng.IntN(300<<10)
			off := rng.IntN(len(model) + 2<<20)
			data := random(n, byte(i))
			if k == 0 {
				data = make([]byte, n) // zeros: a hole
			}
			w.WriteAt(data, int64(off))
			if off+n > len(model) {
				model = append(model, make([]byte, off+n-len(model))...)
			}
			copy(model[off:], data)
		case k < 8: // a flush
			if _, err := w.Flush(ctx); err != nil {
				t.Fatalf("round %d: flush: %v", i, err)
			}
			check(t, fs, r, id, model)
		default: // a truncate, down or up
			if _, err := w.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			size := rng.IntN(len(model) + 3<<20)
			if _, err := fs.Setattr(ctx, id, SetAttr{Size: new(uint64(size))}); err != nil {
				t.Fatalf("round %d: truncate to %d: %v", i, size, err)
			}
			if size < len(model) {
				model = model[:size]
			} else {
				model = append(model, make([]byte, size-len(model))...)
			}
			check(t, fs, r, id, model)
		}
	}
	if _, err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check(t, fs, r, id, model)
}

// check compares file id, as read through r, with model, and checks its
// extents.
func check(t *testing.T, fs, r *FS, id ID, model []byte) {
	t.Helper()
	if got := readAll(t, r, id); !bytes.Equal(got, model) {
		at := 0
		for at < min(len(got), len(model)) && got[at] == model[at] {
			at++
		}
		t.Fatalf("the file (%d bytes) differs from the model (%d) from byte %d", len(got), len(model), at)
	}
	a, _, err := fs.GetAttr(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	ext := extentsOf(t, fs, id, a)
	for i, e := range ext {
		if e.Len == 0 || e.Off+e.Len > a.Size || i > 0 && ext[i-1].Off+ext[i-1].Len > e.Off {
			t.Fatalf("extent %d (%d+%d) out of place, size %d", i, e.Off, e.Len, a.Size)
		}
		if isZero(model[e.Off : e.Off+e.Len]) {
			t.Fatalf("extent %d (%d+%d) holds only zeros", i, e.Off, e.Len)
		}
		if a.Paged() && e.Len > 1<<a.PageShift {
			t.Fatalf("extent %d is longer than a page", i)
		}
	}
}

// A paged file truncated or removed leaves no page records behind.
func TestPagesGoWithTheFile(t *testing.T) {
	fs := newFS(t, 3)[0]
	ctx := ctxT(t)
	id := newFile(t, fs, "f")
	w := fs.NewWriter(id)
	for off := int64(0); off < 8<<20; off += 1 << 20 { // a block in each of 8 pages of 1 MiB
		w.WriteAt(random(100<<10, byte(off>>20)), off)
	}
	a, err := w.Flush(ctx)
	if err != nil || len(a.Pages) != 8 {
		t.Fatalf("flush: %d pages, %v", len(a.Pages), err)
	}
	pages := func() int {
		resp, err := fs.log.Do(ctx, txlog.Request{Partition: PartitionName(id.Part), Level: level.Quorum, Kind: txlog.KindList, Name: PagePrefix})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range resp.Records {
			if strings.HasPrefix(r.Name, PageRecord(id.Num, 0, 0)[:len(PagePrefix)+17]) {
				n++
			}
		}
		return n
	}
	if n := pages(); n != 8 {
		t.Fatalf("%d page records for 8 pages", n)
	}
	if a, err = fs.Setattr(ctx, id, SetAttr{Size: new(uint64(3<<20 + 50<<10))}); err != nil || len(a.Pages) != 4 {
		t.Fatalf("truncate: %d pages, %v", len(a.Pages), err)
	}
	if n := pages(); n != 4 {
		t.Fatalf("%d page records after a truncate to 4 pages", n)
	}
	if err := fs.Unlink(ctx, Root, "f"); err != nil {
		t.Fatal(err)
	}
	if n := pages(); n != 0 {
		t.Fatalf("%d page records after the file was removed", n)
	}
}
