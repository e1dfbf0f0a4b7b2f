package inode

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"syscall"

	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/store"
)

func random(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// newFile creates an empty file called name in the root through fs.
func newFile(t *testing.T, fs *FS, name string) ID {
	t.Helper()
	id, _, err := fs.Create(ctxT(t), Root, name, NewAttr{Type: TypeFile, Mode: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// readAll reads a whole file through fs.
func readAll(t *testing.T, fs *FS, id ID) []byte {
	t.Helper()
	a, _, err := fs.GetAttr(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, a.Size+10)
	n, err := fs.ReadAt(ctxT(t), id, a, buf, 0)
	if !errors.Is(err, io.EOF) || uint64(n) != a.Size {
		t.Fatalf("ReadAt of %d bytes = %d, %v", a.Size, n, err)
	}
	return buf[:n]
}

// extentsOf returns every extent of file id, whose attributes are a.
func extentsOf(t *testing.T, fs *FS, id ID, a Attr) []Extent {
	t.Helper()
	ext, err := fs.Extents(ctxT(t), id, a, 0, a.Size)
	if err != nil {
		t.Fatal(err)
	}
	return ext
}

func TestWriteRead(t *testing.T) {
	fss := newFS(t, 3)
	fs := fss[0]
	ctx := ctxT(t)
	small := newFile(t, fs, "small")
	w := fs.NewWriter(small)
	w.WriteAt([]byte("hello, "), 0)
	w.WriteAt([]byte("world"), 7)
	a, err := w.Flush(ctx)
	if err != nil || a.Size != 12 || a.Inline == nil || len(a.Extents) != 0 {
		t.Fatalf("small file: %+v, %v", a, err)
	}
	if got := readAll(t, fss[1], small); string(got) != "hello, world" {
		t.Fatalf("small file reads %q", got)
	}

	big := newFile(t, fs, "big")
	want := random(3<<20+777, 1)
	w = fs.NewWriter(big)
	for off := 0; off < len(want); off += 100 << 10 { // the kernel writes in pieces
		w.WriteAt(want[off:min(off+100<<10, len(want))], int64(off))
	}
	a, err = w.Flush(ctx)
	if err != nil || a.Size != uint64(len(want)) || len(extentsOf(t, fs, big, a)) < 10 || !a.Paged() {
		t.Fatalf("big file: %d extents, size %d, paged %v, %v", len(extentsOf(t, fs, big, a)), a.Size, a.Paged(), err)
	}
	if got := readAll(t, fss[2], big); !bytes.Equal(got, want) {
		t.Fatal("big file reads back different")
	}
	// Overwrite the middle and append: the extents before the change stay.
	before := extentsOf(t, fs, big, a)
	w = fs.NewWriter(big)
	copy(want[2<<20:], []byte("patched"))
	w.WriteAt([]byte("patched"), 2<<20)
	tail := random(5000, 2)
	w.WriteAt(tail, int64(len(want)))
	want = append(want, tail...)
	a, err = w.Flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kept := 0
	for _, e := range extentsOf(t, fs, big, a) {
		for _, b := range before {
			if e == b {
				kept++
			}
		}
	}
	if kept < len(before)/2 {
		t.Errorf("a 7-byte change at 2 MiB kept %d of %d extents", kept, len(before))
	}
	if got := readAll(t, fss[1], big); !bytes.Equal(got, want) {
		t.Fatal("patched file reads back different")
	}
	// A partial read in the middle, and a write past the end leaves a hole
	// of zeros.
	buf := make([]byte, 10)
	if n, err := fs.ReadAt(ctx, big, a, buf, 2<<20); err != nil || n != 10 || string(buf[:7]) != "patched" {
		t.Errorf("ReadAt = %q, %v", buf[:n], err)
	}
	w = fs.NewWriter(big)
	w.WriteAt([]byte("end"), int64(len(want))+1000)
	if _, err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want = append(append(want, make([]byte, 1000)...), "end"...)
	if got := readAll(t, fs, big); !bytes.Equal(got, want) {
		t.Fatal("file with a hole reads back different")
	}
	// Truncation.
	size := uint64(1 << 20)
	if _, err := fs.Setattr(ctx, big, SetAttr{Size: &size}); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, fs, big); !bytes.Equal(got, want[:1<<20]) {
		t.Fatal("truncated file reads back different")
	}
}

func TestWriterMergesWrites(t *testing.T) {
	w := (&FS{}).NewWriter(ID{})
	w.WriteAt([]byte("aaaa"), 0)
	w.WriteAt([]byte("bb"), 10)
	w.WriteAt([]byte("cccccc"), 2) // overlaps the first
	w.WriteAt([]byte("d"), 20)
	if len(w.dirty) != 3 || string(w.dirty[0].data) != "aacccccc" || w.Buffered() != 11 {
		t.Fatalf("dirty = %+v, %d buffered", w.dirty, w.Buffered())
	}
	w.WriteAt([]byte("ee"), 8) // touches both its neighbours
	if len(w.dirty) != 2 || w.dirty[0].off != 0 || string(w.dirty[0].data) != "aacccccceebb" || w.Buffered() != 13 {
		t.Fatalf("dirty = %+v, %d buffered", w.dirty, w.Buffered())
	}
	w.WriteAt([]byte("ff"), 21) // extends the last span in place
	if len(w.dirty) != 2 || string(w.dirty[1].data) != "dff" || w.Buffered() != 15 || w.End() != 23 {
		t.Fatalf("dirty = %+v, %d buffered, end %d", w.dirty, w.Buffered(), w.End())
	}
}

// Prefetch fetches the blocks ahead of a read into the cache, once each,
// and reads then share them.
func TestPrefetch(t *testing.T) {
	fss := newFS(t, 3)
	ctx := ctxT(t)
	id := newFile(t, fss[0], "f")
	want := random(2<<20, 2)
	w := fss[0].NewWriter(id)
	w.WriteAt(want, 0)
	a, err := w.Flush(ctx)
	ext := extentsOf(t, fss[0], id, a)
	if err != nil || len(ext) < 4 {
		t.Fatalf("flush: %d extents, %v", len(ext), err)
	}
	r := fss[1]
	r.Extents(ctx, id, a, 0, a.Size) // the pages, so that only blocks are counted
	counted := &countingBlocks{Blocks: r.blocks}
	r.blocks = counted
	r.readAhead = int(ext[2].Off) // the first two extents
	r.Prefetch(ctx, id, a, 0)
	r.Prefetch(ctx, id, a, 0) // again, while in flight or cached: no second fetch
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		r.mu.Lock()
		pending := len(r.inflight)
		r.mu.Unlock()
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("prefetches still in flight after 10 s")
		}
	}
	for i, e := range ext {
		if got, want := r.cache.Contains(e.Block), i < 2; got != want {
			t.Errorf("extent %d cached: %v, want %v", i, got, want)
		}
	}
	if n := counted.gets.Load(); n != 2 {
		t.Errorf("%d block fetches, want 2", n)
	}
	if got := readAll(t, r, id); !bytes.Equal(got, want) {
		t.Error("the file reads back different")
	}
	if n := counted.gets.Load(); n != int64(len(ext)) {
		t.Errorf("%d block fetches after reading all %d extents", n, len(ext))
	}
}

// countingBlocks counts block reads.
type countingBlocks struct {
	Blocks
	gets atomic.Int64
}

func (c *countingBlocks) Get(ctx context.Context, h blockstore.Hash, l level.Level) ([]byte, error) {
	c.gets.Add(1)
	return c.Blocks.Get(ctx, h, l)
}

// A full disk reaches the writer as ENOSPC, not as EIO.
func TestFlushOnFullDisk(t *testing.T) {
	fs := newFS(t, 3)[0]
	ctx := ctxT(t)
	id := newFile(t, fs, "f")
	fs.blocks = fullBlocks{fs.blocks}
	w := fs.NewWriter(id)
	w.WriteAt(random(1<<20, 3), 0)
	if _, err := w.Flush(ctx); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("flush onto a full disk: %v, want ENOSPC", err)
	}
}

// fullBlocks is a block store whose disks are full.
type fullBlocks struct{ Blocks }

func (fullBlocks) Set(context.Context, []byte, level.Level) (blockstore.Hash, error) {
	return blockstore.Hash{}, fmt.Errorf("h1: %w", store.ErrNoSpace)
}

// FlushBehind commits in the background while the next writes collect;
// Flush waits for it. A background commit that fails buffers its writes
// again, under those made since, and the next FlushBehind reports it.
func TestFlushBehind(t *testing.T) {
	fss := newFS(t, 3)
	fs := fss[0]
	ctx := ctxT(t)
	id := newFile(t, fs, "f")
	want := random(3<<20, 4)
	gate := &gatedBlocks{Blocks: fs.blocks, open: make(chan struct{})}
	fs.blocks = gate
	w := fs.NewWriter(id)
	w.WriteAt(want[:2<<20], 0)
	if err := w.FlushBehind(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	w.WriteAt(want[2<<20:], 2<<20) // collects while the commit waits
	if w.Buffered() != 1<<20 || w.End() != 3<<20 || !w.Dirty() {
		t.Fatalf("%d buffered, end %d, dirty %v", w.Buffered(), w.End(), w.Dirty())
	}
	// An attribute change waits for the commit, whose times would
	// otherwise land after it.
	set := make(chan bool)
	go func() {
		held, err := w.SetAttr(ctx, SetAttr{Mode: new(uint32(0o600))})
		if err != nil {
			t.Error(err)
		}
		set <- gate.opened.Load() && held
	}()
	time.Sleep(20 * time.Millisecond)
	gate.opened.Store(true)
	close(gate.open)
	if ok := <-set; !ok {
		t.Error("SetAttr returned before the background commit ended, or did not hold the change")
	}
	a, err := w.Flush(ctx)
	if err != nil || a.Size != uint64(len(want)) || a.Mode&0o777 != 0o600 {
		t.Fatalf("flush: size %d, mode %o, %v", a.Size, a.Mode, err)
	}
	if got := readAll(t, fss[1], id); !bytes.Equal(got, want) {
		t.Fatal("the file reads back different")
	}

	// A failed background commit: its writes stay, under the newer ones.
	fs.blocks = fullBlocks{gate.Blocks}
	w.WriteAt(random(1<<20, 5), 0)
	if err := w.FlushBehind(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	copy(want, random(1<<20, 5))
	patch := random(100, 6)
	w.WriteAt(patch, 1000)
	copy(want[1000:], patch)
	if err := w.FlushBehind(ctx, 10*time.Second); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("FlushBehind after a failed commit: %v, want ENOSPC", err)
	}
	if w.Buffered() != 1<<20 || !w.Dirty() {
		t.Fatalf("%d bytes buffered after a failed commit, want %d", w.Buffered(), 1<<20)
	}
	fs.blocks = gate.Blocks
	if _, err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, fss[2], id); !bytes.Equal(got, want) {
		t.Fatal("the file reads back different after the retried commit")
	}
}

// A file written from start to end, committed behind every 2 MiB as the
// mount does, fills one buffer while the other is committed and reads
// back whole.
func TestFlushBehindStreams(t *testing.T) {
	fss := newFS(t, 3)
	ctx := ctxT(t)
	id := newFile(t, fss[0], "f")
	want := random(9<<20+123, 7)
	w := fss[0].NewWriter(id)
	reused := 0
	for off := 0; off < len(want); off += 128 << 10 {
		spare := w.spare
		w.WriteAt(want[off:min(off+128<<10, len(want))], int64(off))
		if spare != nil && w.spare == nil && &w.dirty[0].data[0] == &spare[:1][0] {
			reused++
		}
		if w.Buffered() >= 2<<20 {
			if err := w.FlushBehind(ctx, 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	if a, err := w.Flush(ctx); err != nil || a.Size != uint64(len(want)) {
		t.Fatalf("flush: size %d, %v", a.Size, err)
	}
	if reused < 2 || w.spare != nil {
		t.Errorf("a committed buffer was reused %d times, want at least 2; kept after Flush: %v", reused, w.spare != nil)
	}
	if got := readAll(t, fss[1], id); !bytes.Equal(got, want) {
		t.Fatal("the file reads back different")
	}
}

// gatedBlocks holds every Set until open is closed.
type gatedBlocks struct {
	Blocks
	open   chan struct{}
	opened atomic.Bool
}

func (g *gatedBlocks) Set(ctx context.Context, data []byte, l level.Level) (blockstore.Hash, error) {
	select {
	case <-g.open:
	case <-ctx.Done():
		return blockstore.Hash{}, ctx.Err()
	}
	return g.Blocks.Set(ctx, data, l)
}

// Slice hands out a block's own bytes where one block holds the range,
// and otherwise reads as ReadAt does, down to the end of the file.
func TestSlice(t *testing.T) {
	fss := newFS(t, 3)
	fs := fss[0]
	ctx := ctxT(t)
	id := newFile(t, fs, "f")
	want := random(1<<20+5, 8)
	w := fs.NewWriter(id)
	w.WriteAt(want, 0)
	a, err := w.Flush(ctx)
	ext := extentsOf(t, fs, id, a)
	if err != nil || len(ext) < 3 {
		t.Fatalf("flush: %d extents, %v", len(ext), err)
	}
	r := fss[1]
	e := ext[1]
	inside, err := r.Slice(ctx, id, a, int64(e.Off)+10, 100)
	if err != nil || !bytes.Equal(inside, want[e.Off+10:e.Off+110]) {
		t.Fatalf("a range inside block 1: %v", err)
	}
	if cached, ok := r.cache.Get(e.Block); !ok || &cached[10] != &inside[0] {
		t.Error("a range inside one block is not that block's bytes")
	}
	across, err := r.Slice(ctx, id, a, int64(e.Off)-50, 100)
	if err != nil || !bytes.Equal(across, want[e.Off-50:e.Off+50]) {
		t.Fatalf("a range across two blocks: %v", err)
	}
	last := ext[len(ext)-1]
	for _, off := range []int64{int64(last.Off) + 1, int64(len(want)) - 3000} { // in the last block, across into it
		tail, err := r.Slice(ctx, id, a, off, 1<<20)
		if !errors.Is(err, io.EOF) || !bytes.Equal(tail, want[off:]) {
			t.Errorf("the tail from %d: %d bytes, %v", off, len(tail), err)
		}
	}
	if b, err := r.Slice(ctx, id, a, int64(len(want)), 10); len(b) != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("at the end: %d bytes, %v", len(b), err)
	}
	// Past the end after a truncate up: a hole, which reads as zeros.
	a, err = fs.Setattr(ctx, id, SetAttr{Size: new(uint64(len(want) + 10))})
	if err != nil {
		t.Fatal(err)
	}
	if hole, err := r.Slice(ctx, id, a, int64(len(want))-1, 20); !errors.Is(err, io.EOF) || len(hole) != 11 || hole[0] != want[len(want)-1] || !bytes.Equal(hole[1:], make([]byte, 10)) {
		t.Errorf("across the end into a hole: %v, %v", hole, err)
	}
	small := newFile(t, fs, "small")
	w = fs.NewWriter(small)
	w.WriteAt([]byte("inline bytes"), 0)
	if a, err = w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if b, err := r.Slice(ctx, small, a, 7, 100); string(b) != "bytes" || !errors.Is(err, io.EOF) {
		t.Errorf("an inline file: %q, %v", b, err)
	}
}
