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

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/txlog"
)

// Blocks stores and fetches blocks; *blockstore.Service implements it.
type Blocks interface {
	Set(ctx context.Context, data []byte, l level.Level) (blockstore.Hash, error)
	Get(ctx context.Context, h blockstore.Hash, l level.Level) ([]byte, error)
}

// InlineMax is the size up to which a file's bytes live in its inode
// record instead of in blocks.
const InlineMax = 4096

// ReadAt reads the bytes of file id, whose attributes are a, into p from
// offset off, and returns how many it read: fewer than len(p) only at the
// end of the file, with io.EOF. If the file changed since a was read so
// that a's pages are gone, it reads the file as it is now.
func (f *FS) ReadAt(ctx context.Context, id ID, a Attr, p []byte, off int64) (int, error) {
	for try := 0; ; try++ {
		n, err := f.readAt(ctx, id, a, p, off)
		if !errors.Is(err, errStalePage) || try == 3 {
			return n, err
		}
		if a, _, err = f.GetAttr(ctx, id); err != nil {
			return 0, err
		}
	}
}

func (f *FS) readAt(ctx context.Context, id ID, a Attr, p []byte, off int64) (int, error) {
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
	ext, err := f.Extents(ctx, id, a, uint64(off), end)
	if err != nil {
		return 0, err
	}
	for _, e := range ext {
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

// Slice returns up to n bytes of file id, whose attributes are a, from
// offset off: fewer only at the end of the file, with io.EOF. Bytes that
// one block holds are that block's, as the cache keeps it, not a copy:
// the caller must not change them.
func (f *FS) Slice(ctx context.Context, id ID, a Attr, off int64, n int) ([]byte, error) {
	if a.Type == TypeFile && a.Inline == nil && off >= 0 && uint64(off) < a.Size {
		end := min(uint64(off)+uint64(n), a.Size)
		ext, err := f.Extents(ctx, id, a, uint64(off), uint64(off)+1)
		if err != nil && !errors.Is(err, errStalePage) {
			return nil, err
		}
		if len(ext) == 1 && end <= ext[0].Off+ext[0].Len {
			e := ext[0]
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
	p := make([]byte, n)
	got, err := f.ReadAt(ctx, id, a, p, off)
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
	progressed(ctx)
	return data, nil
}

// blockCache keeps the blocks read last, bounded by count and by bytes.
// Blocks never change, so a kept one is always right. It is safe for
// concurrent use.
type blockCache struct {
	mu       sync.Mutex
	c        *simplelru.LRU[blockstore.Hash, []byte]
	bytes    int64
	maxBytes int64
}

func newBlockCache(blocks int, maxBytes int64) *blockCache {
	bc := &blockCache{maxBytes: maxBytes}
	bc.c, _ = simplelru.NewLRU(blocks, func(_ blockstore.Hash, v []byte) { bc.bytes -= int64(len(v)) }) // fails only for a size below 1
	return bc
}

// Get returns block h if kept.
func (bc *blockCache) Get(h blockstore.Hash) ([]byte, bool) {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	return bc.c.Get(h)
}

// Contains reports whether block h is kept.
func (bc *blockCache) Contains(h blockstore.Hash) bool {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	return bc.c.Contains(h)
}

// Add keeps block h, dropping the oldest while the cache holds too many
// bytes (the newest is kept whatever its size).
func (bc *blockCache) Add(h blockstore.Hash, data []byte) {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if bc.c.Contains(h) {
		return
	}
	bc.c.Add(h, data)
	bc.bytes += int64(len(data))
	for bc.bytes > bc.maxBytes && bc.c.Len() > 1 {
		bc.c.RemoveOldest()
	}
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

// Prefetch starts fetching, in the background, the blocks of file id,
// whose attributes are a, that hold the bytes from off up to its
// read-ahead window: a reader going through the file sequentially then
// finds them ready. A paged file's pages are read now, if need be.
func (f *FS) Prefetch(ctx context.Context, id ID, a Attr, off uint64) {
	ext, err := f.Extents(ctx, id, a, off, min(off+uint64(f.readAhead), a.Size))
	if err != nil {
		return // the read that needs them will say why
	}
	for _, e := range ext {
		f.startFetch(e.Block)
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
	// dirty holds the written ranges, sorted by offset, not overlapping;
	// bytes counts them. They and a background commit's count in the
	// FS's dirty bytes (see account).
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
	bytes   int
	pending *SetAttr
	done    chan struct{}
}

// held returns the bytes of writes w holds: buffered, or being committed
// in the background. w.mu must be held.
func (w *Writer) held() int {
	n := w.bytes
	if w.behind != nil {
		n += w.behind.bytes
	}
	return n
}

// account runs fn, which changes what w holds, under w.mu, and tells the
// FS how the bytes it holds changed.
func (w *Writer) account(fn func()) {
	before := w.held()
	fn()
	w.fs.addDirty(int64(w.held() - before))
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
	w.account(func() { w.writeAt(p, off) })
}

func (w *Writer) writeAt(p []byte, off int64) {
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
	w.account(func() { w.dirty, w.bytes, w.pending, w.failed, w.spare = nil, 0, nil, nil, nil })
	return na, nil
}

// Wait waits for the background commit, if one runs, and returns the
// error it failed with, if it did (as FlushBehind would).
func (w *Writer) Wait(ctx context.Context) error {
	if err := w.lockIdle(ctx); err != nil {
		return err
	}
	defer w.mu.Unlock()
	err := w.failed
	w.failed = nil
	return err
}

// FlushBehind starts committing the buffered writes in the background,
// which fails if it makes no progress for stall (see WithStall), and
// returns: the writes that follow collect
// meanwhile, so a file written sequentially is cut, hashed and stored
// while the kernel hands over the next bytes. It first waits for the
// commit it started before (ctx bounds the wait). If that one failed, it
// returns its error and starts nothing: those writes are buffered again,
// under any made since, for the next commit to retry.
func (w *Writer) FlushBehind(ctx context.Context, stall time.Duration) error {
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
	b := &batch{dirty: w.dirty, bytes: w.bytes, pending: w.pending, done: make(chan struct{})}
	w.dirty, w.bytes, w.pending, w.behind = nil, 0, nil, b
	bg, cancel := WithStall(context.WithoutCancel(ctx), stall)
	go func() {
		defer cancel()
		_, err := w.fs.commit(bg, w.id, b.dirty, b.pending)
		if err != nil && context.Cause(bg) != nil && !errors.Is(context.Cause(bg), context.Canceled) {
			err = fmt.Errorf("%w (%v)", err, context.Cause(bg))
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		defer w.account(func() { w.behind = nil })
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
		close(b.done)
	}()
	return nil
}

// commit writes dirty, and the attribute changes in pending, to inode id
// and returns the inode as written.
func (f *FS) commit(ctx context.Context, id ID, dirty []span, pending *SetAttr) (Attr, error) {
	return f.updateFile(ctx, id, "flush", func(a *Attr) ([]txlog.Change, error) {
		na, changes, err := f.rewrite(ctx, id, *a, dirty)
		if err != nil {
			return nil, err
		}
		now := f.clock().UnixNano()
		na.Mtime, na.Ctime = now, now
		if pending != nil {
			pending.apply(&na, now)
		}
		*a = na
		return changes, nil
	})
}
