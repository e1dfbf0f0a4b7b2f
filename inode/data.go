package inode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/level"
)

// Blocks stores and fetches blocks; *blockstore.Service implements it.
type Blocks interface {
	Set(ctx context.Context, data []byte, l level.Level) (blockstore.Hash, error)
	Get(ctx context.Context, h blockstore.Hash, l level.Level) ([]byte, error)
}

// InlineMax is the size up to which a file's bytes live in its inode
// record instead of in blocks.
const InlineMax = 4096

// ReadAt reads the bytes of a file whose attributes are a into p from
// offset off, and returns how many it read: fewer than len(p) only at the
// end of the file, with io.EOF.
func (f *FS) ReadAt(ctx context.Context, a Attr, p []byte, off int64) (int, error) {
	if a.Type != TypeFile {
		return 0, fmt.Errorf("read: %w", syscall.EISDIR)
	}
	if off < 0 {
		return 0, fmt.Errorf("read at %d: %w", off, syscall.EINVAL)
	}
	if uint64(off) >= a.Size {
		return 0, io.EOF
	}
	n := int(min(uint64(len(p)), a.Size-uint64(off)))
	clear(p[:n]) // holes read as zeros
	if a.Inline != nil {
		if off < int64(len(a.Inline)) {
			copy(p[:n], a.Inline[off:])
		}
	}
	end := uint64(off) + uint64(n)
	for _, e := range a.Extents {
		if e.Off >= end || e.Off+e.Len <= uint64(off) {
			continue
		}
		data, err := f.extentBytes(ctx, e)
		if err != nil {
			return 0, err
		}
		lo, hi := max(e.Off, uint64(off)), min(e.Off+e.Len, end)
		copy(p[lo-uint64(off):hi-uint64(off)], data[lo-e.Off:hi-e.Off])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Slice returns up to n bytes of a file whose attributes are a, from
// offset off: fewer only at the end of the file, with io.EOF. Bytes that
// one block holds are that block's, as the cache keeps it, not a copy:
// the caller must not change them.
func (f *FS) Slice(ctx context.Context, a Attr, off int64, n int) ([]byte, error) {
	if a.Type == TypeFile && a.Inline == nil && off >= 0 && uint64(off) < a.Size {
		end := min(uint64(off)+uint64(n), a.Size)
		i, _ := slices.BinarySearchFunc(a.Extents, uint64(off), func(e Extent, off uint64) int {
			if e.Off+e.Len <= off {
				return -1
			}
			return 0
		})
		if i < len(a.Extents) {
			if e := a.Extents[i]; e.Off <= uint64(off) && end <= e.Off+e.Len {
				data, err := f.extentBytes(ctx, e)
				if err != nil {
					return nil, err
				}
				p := data[uint64(off)-e.Off : end-e.Off]
				if len(p) < n {
					return p, io.EOF
				}
				return p, nil
			}
		}
	}
	p := make([]byte, n)
	got, err := f.ReadAt(ctx, a, p, off)
	return p[:got], err
}

// extentBytes returns the block of extent e, which must hold its length.
func (f *FS) extentBytes(ctx context.Context, e Extent) ([]byte, error) {
	data, err := f.block(ctx, e.Block)
	if err != nil {
		return nil, err
	}
	if uint64(len(data)) < e.Len {
		return nil, fmt.Errorf("block %s has %d bytes, its extent %d: %w", e.Block, len(data), e.Len, syscall.EIO)
	}
	return data, nil
}

// fetchTimeout bounds one block fetch, which readers share.
const fetchTimeout = 30 * time.Second

// fetch is a block read in flight, shared by every reader that wants it.
type fetch struct {
	done chan struct{}
	data []byte
	err  error
}

// block returns a block: from the cache, from a fetch already in flight,
// or fetched now.
func (f *FS) block(ctx context.Context, h blockstore.Hash) ([]byte, error) {
	data, fe, started := f.startFetch(h)
	if started {
		f.misses.Add(1)
	} else {
		f.hits.Add(1)
	}
	if fe == nil {
		return data, nil
	}
	select {
	case <-fe.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("read block %s: %w", h, ctx.Err())
	}
	if fe.err != nil {
		return nil, fmt.Errorf("read block %s: %w: %v", h, syscall.EIO, fe.err)
	}
	return fe.data, nil
}

// startFetch returns block h if the cache holds it, else its fetch,
// started now (started is then set) unless one is in flight.
func (f *FS) startFetch(h blockstore.Hash) (data []byte, fe *fetch, started bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if data, ok := f.cache.Get(h); ok {
		return data, nil, false
	}
	if fe, ok := f.inflight[h]; ok {
		return nil, fe, false
	}
	fe = &fetch{done: make(chan struct{})}
	f.inflight[h] = fe
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		defer cancel()
		fe.data, fe.err = f.blocks.Get(ctx, h, f.levels.Blocks)
		f.mu.Lock()
		if fe.err == nil {
			f.cache.Add(h, fe.data)
		}
		delete(f.inflight, h)
		f.mu.Unlock()
		close(fe.done)
	}()
	return nil, fe, true
}

// Prefetch starts fetching, in the background, the blocks of the file
// whose attributes are a that hold the bytes from off up to its read-ahead
// window: a reader going through the file sequentially then finds them
// ready.
func (f *FS) Prefetch(a Attr, off uint64) {
	end := off + uint64(f.readAhead)
	for _, e := range a.Extents {
		if e.Off+e.Len > off && e.Off < end {
			f.startFetch(e.Block)
		}
	}
}

// Writer collects the writes of an open file in memory until Flush
// commits them as one transaction of the inode (new blocks stored first).
// FlushBehind commits them in the background instead, while the next
// writes collect: one such commit runs at a time, and Flush waits for it.
// It is safe for concurrent use.
type Writer struct {
	fs *FS
	id ID
	mu sync.Mutex
	// dirty holds the written ranges, sorted by offset, not overlapping.
	dirty []span
	bytes int
	// pending holds attribute changes made while writes were buffered,
	// committed with them.
	pending *SetAttr
	// behind is the commit running in the background, if any.
	behind *batch
	// failed is the error of the last background commit, whose writes
	// are in dirty again; FlushBehind reports it.
	failed error
	// spare is the buffer of a background commit that is done with it,
	// for the next run of writes: a file written from start to end then
	// fills one buffer while the other is committed, with neither
	// allocated again. Flush drops it.
	spare []byte
}

// batch is buffered writes taken out for a background commit.
type batch struct {
	dirty   []span
	pending *SetAttr
	done    chan struct{}
}

// lockIdle locks w once no background commit runs.
func (w *Writer) lockIdle(ctx context.Context) error {
	for {
		w.mu.Lock()
		if w.behind == nil {
			return nil
		}
		done := w.behind.done
		w.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("wait for a commit of %s: %w", w.id, ctx.Err())
		}
	}
}

// SetAttr records attribute changes (not a size) to commit in the same
// transaction as the buffered writes, and reports whether it did: with
// nothing buffered, or a size to set, the caller commits them itself,
// after any background commit (whose times must not overwrite them).
func (w *Writer) SetAttr(ctx context.Context, sa SetAttr) (bool, error) {
	if err := w.lockIdle(ctx); err != nil {
		return false, err
	}
	defer w.mu.Unlock()
	if len(w.dirty) == 0 || sa.Size != nil {
		return false, nil
	}
	if w.pending == nil {
		w.pending = &SetAttr{}
	}
	*w.pending = w.pending.merge(sa)
	return true, nil
}

// Apply shows the writer's pending attribute changes on a, at time now.
func (w *Writer) Apply(a *Attr, now int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.behind != nil && w.behind.pending != nil {
		w.behind.pending.apply(a, now)
	}
	if w.pending != nil {
		w.pending.apply(a, now)
	}
}

type span struct {
	off  int64
	data []byte
}

// NewWriter returns a writer for file id.
func (f *FS) NewWriter(id ID) *Writer { return &Writer{fs: f, id: id} }

// WriteAt records a write of p at off.
func (w *Writer) WriteAt(p []byte, off int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(p) == 0 {
		return
	}
	if w.pending != nil {
		w.pending.Mtime = nil // the write is later: it sets the time
	}
	// The common case, a sequential write, extends the last span in place.
	if k := len(w.dirty) - 1; k >= 0 && w.dirty[k].off+int64(len(w.dirty[k].data)) == off {
		w.dirty[k].data = appendDoubling(w.dirty[k].data, p)
		w.bytes += len(p)
		return
	}
	var data []byte
	if len(w.dirty) == 0 && w.spare != nil {
		data, w.spare = append(w.spare, p...), nil
	} else {
		data = slices.Clone(p)
	}
	w.add(span{off, data})
}

// add records n over the buffered writes, merging it with every span it
// touches or overlaps; n's bytes win.
func (w *Writer) add(n span) {
	var out []span
	for _, s := range w.dirty {
		if s.off+int64(len(s.data)) < n.off || n.off+int64(len(n.data)) < s.off {
			out = append(out, s)
			continue
		}
		lo := min(s.off, n.off)
		hi := max(s.off+int64(len(s.data)), n.off+int64(len(n.data)))
		merged := make([]byte, hi-lo)
		copy(merged[s.off-lo:], s.data)
		copy(merged[n.off-lo:], n.data)
		w.bytes -= len(s.data)
		n = span{lo, merged}
	}
	out = append(out, n)
	slices.SortFunc(out, func(a, b span) int { return int(a.off - b.off) })
	w.dirty = out
	w.bytes += len(n.data)
}

// appendDoubling appends p to b, at least doubling b's capacity when it
// must grow. append grows a large slice by only a quarter, so a
// sequential write of 64 MiB in 128 KiB pieces would copy it five times
// over, and clear as much again.
func appendDoubling(b, p []byte) []byte {
	if need := len(b) + len(p); need > cap(b) {
		grown := make([]byte, len(b), max(need, 2*cap(b)))
		copy(grown, b)
		b = grown
	}
	return append(b, p...)
}

// Buffered returns how many bytes wait for a commit to start.
func (w *Writer) Buffered() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bytes
}

// End returns the end of the furthest write not yet committed, 0 if none.
func (w *Writer) End() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	end := spansEnd(w.dirty)
	if w.behind != nil {
		end = max(end, spansEnd(w.behind.dirty))
	}
	return end
}

// spansEnd returns where the last of sorted spans ends, 0 if none.
func spansEnd(spans []span) uint64 {
	if len(spans) == 0 {
		return 0
	}
	last := spans[len(spans)-1]
	return uint64(last.off) + uint64(len(last.data))
}

// Dirty reports whether anything waits for Flush: writes buffered or
// being committed in the background.
func (w *Writer) Dirty() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.dirty) > 0 || w.behind != nil
}

// Flush commits the buffered writes, after any background commit: it
// rebuilds the file's content from the first block a write touches to
// the end, cuts it into blocks, stores those, and writes the inode with
// its new extents (or inline bytes) and size, under the condition that
// the inode did not change meanwhile (it reads it again and redoes the
// work if it did).
func (w *Writer) Flush(ctx context.Context) (Attr, error) {
	if err := w.lockIdle(ctx); err != nil {
		return Attr{}, err
	}
	defer w.mu.Unlock()
	if len(w.dirty) == 0 {
		a, _, err := w.fs.GetAttr(ctx, w.id)
		return a, err
	}
	na, err := w.fs.commit(ctx, w.id, w.dirty, w.pending)
	if err != nil {
		return Attr{}, err
	}
	w.dirty, w.bytes, w.pending, w.failed, w.spare = nil, 0, nil, nil, nil
	return na, nil
}

// FlushBehind starts committing the buffered writes in the background,
// bounded by timeout, and returns: the writes that follow collect
// meanwhile, so a file written sequentially is cut, hashed and stored
// while the kernel hands over the next bytes. It first waits for the
// commit it started before (ctx bounds the wait). If that one failed, it
// returns its error and starts nothing: those writes are buffered again,
// under any made since, for the next commit to retry.
func (w *Writer) FlushBehind(ctx context.Context, timeout time.Duration) error {
	if err := w.lockIdle(ctx); err != nil {
		return err
	}
	defer w.mu.Unlock()
	if err := w.failed; err != nil {
		w.failed = nil
		return err
	}
	if len(w.dirty) == 0 {
		return nil
	}
	b := &batch{dirty: w.dirty, pending: w.pending, done: make(chan struct{})}
	w.dirty, w.bytes, w.pending, w.behind = nil, 0, nil, b
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	go func() {
		defer cancel()
		_, err := w.fs.commit(bg, w.id, b.dirty, b.pending)
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil {
			// Buffer the writes again, under those made since, which
			// also set the time. Attribute changes wait for this commit
			// (SetAttr), so none were recorded meanwhile.
			newer := w.dirty
			w.dirty, w.bytes = b.dirty, 0
			for _, s := range w.dirty {
				w.bytes += len(s.data)
			}
			for _, s := range newer {
				w.add(s)
			}
			if b.pending != nil {
				restored := *b.pending
				if len(newer) > 0 {
					restored.Mtime = nil
				}
				w.pending = &restored
			}
			w.failed = err
		} else if len(b.dirty) == 1 && len(b.dirty[0].data) > InlineMax {
			// Stored and sent: nothing refers to these bytes now (inline
			// bytes, which the inode would keep, are never this many).
			w.spare = b.dirty[0].data[:0]
		}
		w.behind = nil
		close(b.done)
	}()
	return nil
}

// commit writes dirty, and the attribute changes in pending, to inode id
// and returns the inode as written.
func (f *FS) commit(ctx context.Context, id ID, dirty []span, pending *SetAttr) (Attr, error) {
	return f.updateInode(ctx, id, "flush", func(a *Attr) error {
		na, err := f.rewrite(ctx, *a, dirty)
		if err != nil {
			return err
		}
		now := f.clock().UnixNano()
		na.Mtime, na.Ctime = now, now
		if pending != nil {
			pending.apply(&na, now)
		}
		*a = na
		return nil
	})
}

// rewrite returns a with the writes in dirty applied: the content from the
// first extent they touch to the end is read, overlaid, cut into blocks
// and stored; extents before it are kept.
func (f *FS) rewrite(ctx context.Context, a Attr, dirty []span) (Attr, error) {
	first := dirty[0].off
	last := dirty[len(dirty)-1]
	size := max(int64(a.Size), last.off+int64(len(last.data)))
	// Keep the extents that end before the first write; rebuild from there.
	from := int64(0)
	var kept []Extent
	if a.Inline == nil {
		for _, e := range a.Extents {
			if int64(e.Off+e.Len) <= first {
				kept = append(kept, e)
				from = int64(e.Off + e.Len)
			}
		}
	}
	var content []byte
	if only := dirty[0].data; len(dirty) == 1 && dirty[0].off == from && int64(len(only)) == size-from {
		// One write covers all there is to rebuild, the common case of
		// a file written from start to end: its bytes are the content,
		// without a copy or a read of what it overwrites.
		content = only[:len(only):len(only)]
	} else {
		content = make([]byte, size-from)
		if from < int64(a.Size) {
			if _, err := f.ReadAt(ctx, a, content[:int64(a.Size)-from], from); err != nil && !errors.Is(err, io.EOF) {
				return Attr{}, err
			}
		}
		for _, s := range dirty {
			copy(content[s.off-from:], s.data)
		}
	}
	na := a
	na.Size, na.Inline, na.Extents = uint64(size), nil, kept
	if size <= InlineMax && from == 0 {
		na.Inline, na.Extents = content, nil
		return na, nil
	}
	// Cut first, then store the blocks in parallel; each is a piece of
	// content, which stays as it is.
	cuts, err := blockstore.Cuts(content, f.chunk)
	if err != nil {
		return Attr{}, err
	}
	var pieces []Extent
	off := uint64(from)
	for _, n := range cuts {
		pieces = append(pieces, Extent{Off: off, Len: uint64(n)})
		off += uint64(n)
	}
	if err := f.storeAll(ctx, pieces, func(e Extent) []byte { return content[e.Off-uint64(from) : e.Off-uint64(from)+e.Len] }); err != nil {
		return Attr{}, err
	}
	na.Extents = append(na.Extents, pieces...)
	return na, nil
}

// uploads bounds the block uploads one flush runs at once.
const uploads = 4

// storeAll stores the bytes of every extent (data gives them), up to
// uploads at once, and fills in their hashes.
func (f *FS) storeAll(ctx context.Context, extents []Extent, data func(Extent) []byte) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, uploads)
	errs := make(chan error, len(extents))
	var wg sync.WaitGroup
	for i := range extents {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			h, err := f.blocks.Set(ctx, data(extents[i]), f.levels.BlockWrite)
			if err != nil {
				errs <- fmt.Errorf("store a block: %w", errno(err))
				cancel()
				return
			}
			extents[i].Block = h
		})
	}
	wg.Wait()
	close(errs)
	return <-errs // nil if none failed
}
