package inode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"syscall"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/txlog"
)

// A commit rebuilds only what its writes change. Blocks are cut by content,
// so the bytes after a change are cut as they were once the cutting passes
// a point where it cut before: each run of writes is rebuilt from the start
// of the extent its first byte falls in, overlaid on the old content, and
// cut until a new cut falls on an old extent's end past the writes, or the
// data ends (the end of the file, or a hole). Everything else keeps its
// extents. Blocks of zeros are not stored: they become holes, as the bytes
// no extent covers are. So a write costs about the blocks it touches,
// whatever the file's size, and memory holds a few blocks at a time.

// rebuilt is one range of a file rebuilt by a commit: the old extents
// whose offsets lie in [lo, hi) give way to ext. Each extent is allocated
// on its own: its upload fills in its hash.
type rebuilt struct {
	lo, hi uint64
	ext    []*Extent
}

// oldFile looks up a file's extents as they were before a commit, loading
// a paged file's pages as it needs them.
type oldFile struct {
	f   *FS
	ctx context.Context
	id  ID
	a   Attr
	// pages holds the extents of the pages loaded, by index, and which
	// of a.Pages exist.
	pages map[uint64][]Extent
	refs  map[uint64]PageRef
}

func (f *FS) oldFile(ctx context.Context, id ID, a Attr) *oldFile {
	o := &oldFile{f: f, ctx: ctx, id: id, a: a}
	if a.Paged() {
		o.pages, o.refs = map[uint64][]Extent{}, make(map[uint64]PageRef, len(a.Pages))
		for _, p := range a.Pages {
			o.refs[p.Index] = p
		}
	}
	return o
}

// page returns the extents of page idx (none for a page the file lacks).
func (o *oldFile) page(idx uint64) ([]Extent, error) {
	if ext, ok := o.pages[idx]; ok {
		return ext, nil
	}
	ref, ok := o.refs[idx]
	if !ok {
		return nil, nil
	}
	ext, err := o.f.page(o.ctx, o.id, ref)
	if err != nil {
		return nil, err
	}
	o.pages[idx] = ext
	return ext, nil
}

// near returns the old extents that may hold byte x or end at it: an
// unpaged file's all, a paged file's of x's page and the one before.
func (o *oldFile) near(x uint64) ([]Extent, error) {
	if !o.a.Paged() {
		return o.a.Extents, nil
	}
	idx := x >> o.a.PageShift
	cur, err := o.page(idx)
	if err != nil || idx == 0 {
		return cur, err
	}
	prev, err := o.page(idx - 1)
	if err != nil || len(prev) == 0 {
		return cur, err
	}
	return append(slices.Clip(prev), cur...), nil
}

// covering returns the old extent that holds byte x, if any.
func (o *oldFile) covering(x uint64) (Extent, bool, error) {
	ext, err := o.near(x)
	if err != nil {
		return Extent{}, false, err
	}
	for _, e := range overlapping(ext, x, x+1) {
		return e, true, nil
	}
	return Extent{}, false, nil
}

// endsAt reports whether an old extent ends at x.
func (o *oldFile) endsAt(x uint64) (bool, error) {
	if x == 0 {
		return false, nil
	}
	ext, err := o.near(x - 1)
	if err != nil {
		return false, err
	}
	for _, e := range overlapping(ext, x-1, x) {
		return e.Off+e.Len == x, nil
	}
	return false, nil
}

// content reads a file's new content from a position on: the writes where
// they are, the old extents elsewhere, ending where neither is (a hole) or
// at the new size.
type content struct {
	o     *oldFile
	dirty []span
	pos   uint64
	size  uint64
}

func (c *content) Read(p []byte) (int, error) {
	if c.pos >= c.size {
		return 0, io.EOF
	}
	// The first write that ends past pos; spans are sorted and disjoint.
	i, _ := slices.BinarySearchFunc(c.dirty, c.pos, func(s span, pos uint64) int {
		if s.end() <= pos {
			return -1
		}
		return 1
	})
	if i < len(c.dirty) && uint64(c.dirty[i].off) <= c.pos {
		s := c.dirty[i]
		n := copy(p, s.data[c.pos-uint64(s.off):])
		c.pos += uint64(n)
		return n, nil
	}
	e, ok, err := c.o.covering(c.pos)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, io.EOF // a hole: the data ends
	}
	limit := min(e.Off+e.Len, c.size)
	if i < len(c.dirty) {
		limit = min(limit, uint64(c.dirty[i].off))
	}
	data, err := c.o.f.extentBytes(c.o.ctx, e)
	if err != nil {
		return 0, err
	}
	n := copy(p, data[c.pos-e.Off:limit-e.Off])
	c.pos += uint64(n)
	return n, nil
}

// end returns where s ends.
func (s span) end() uint64 { return uint64(s.off) + uint64(len(s.data)) }

// uploads bounds the block uploads one commit runs at once.
const uploads = 4

// uploader stores blocks, up to uploads at once, filling in their
// extents' hashes; the first failure cancels the rest.
type uploader struct {
	f      *FS
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

func (f *FS) newUploader(ctx context.Context) *uploader {
	ctx, cancel := context.WithCancel(ctx)
	return &uploader{f: f, ctx: ctx, cancel: cancel, sem: make(chan struct{}, uploads)}
}

// store stores data as the block of *e, which must stay valid until wait.
// It fails once an upload has failed, or the context has ended.
func (u *uploader) store(e *Extent, data []byte) error {
	select {
	case u.sem <- struct{}{}:
	case <-u.ctx.Done():
		if err := u.wait(); err != nil {
			return err
		}
		return fmt.Errorf("store a block: %w", context.Cause(u.ctx))
	}
	u.wg.Go(func() {
		defer func() { <-u.sem }()
		h, err := u.f.blocks.Set(u.ctx, data, u.f.levels.BlockWrite)
		if err != nil {
			u.mu.Lock()
			if u.err == nil {
				u.err = fmt.Errorf("store a block: %w", errno(err))
			}
			u.mu.Unlock()
			u.cancel()
			return
		}
		progressed(u.ctx)
		e.Block = h
	})
	return nil
}

// wait waits for every upload and returns the first failure, or the
// context's end if it ended first.
func (u *uploader) wait() error {
	u.wg.Wait()
	err := u.ctx.Err()
	u.cancel()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.err == nil && err != nil {
		return fmt.Errorf("store blocks: %w", context.Cause(u.ctx))
	}
	return u.err
}

// isZero reports whether b holds only zeros.
func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// rebuild cuts the content of the runs of writes in dirty (sorted,
// disjoint, within size) into blocks, stores them, and returns the ranges
// rebuilt with their new extents.
func (f *FS) rebuild(ctx context.Context, o *oldFile, dirty []span, size uint64) ([]rebuilt, error) {
	up := f.newUploader(ctx)
	var out []rebuilt
	for i := 0; i < len(dirty); {
		s := dirty[i]
		start := uint64(s.off)
		e, ok, err := o.covering(start)
		if err != nil {
			up.wait()
			return nil, err
		}
		if ok && e.Off < start {
			start = e.Off
		}
		next, ok, err := o.covering(s.end())
		if err != nil {
			up.wait()
			return nil, err
		}
		var r rebuilt
		if start == uint64(s.off) && !ok && next.Len == 0 {
			// The write stands alone, old data on neither side: its
			// bytes are the content, cut where they are.
			r, err = f.cutInPlace(up, s)
			i++
		} else {
			r, i, err = f.cutRun(up, o, dirty, i, start, size)
		}
		if err != nil {
			up.wait()
			return nil, err
		}
		out = append(out, r)
	}
	if err := up.wait(); err != nil {
		return nil, err
	}
	for _, r := range out {
		for _, e := range r.ext {
			if e.Block == (blockstore.Hash{}) {
				return nil, fmt.Errorf("the block at %d was not stored: %w", e.Off, syscall.EIO)
			}
		}
	}
	return out, nil
}

// cutInPlace cuts a write that is all its run holds, storing slices of
// its own buffer.
func (f *FS) cutInPlace(up *uploader, s span) (rebuilt, error) {
	cuts, err := blockstore.Cuts(s.data, f.chunk)
	if err != nil {
		return rebuilt{}, err
	}
	r := rebuilt{lo: uint64(s.off), hi: s.end()}
	off, at := uint64(s.off), 0
	for _, n := range cuts {
		if piece := s.data[at : at+n]; !isZero(piece) {
			e := &Extent{Off: off, Len: uint64(n)}
			r.ext = append(r.ext, e)
			if err := up.store(e, piece); err != nil {
				return rebuilt{}, err
			}
		}
		off, at = off+uint64(n), at+n
	}
	return r, nil
}

// cutRun rebuilds from start, the beginning of write i's run, until the
// cuts line up with the old ones past the writes or the data ends, and
// returns the range rebuilt and the index of the first write after it.
func (f *FS) cutRun(up *uploader, o *oldFile, dirty []span, i int, start, size uint64) (rebuilt, int, error) {
	c, err := blockstore.NewChunker(&content{o: o, dirty: dirty, pos: start, size: size}, f.chunk)
	if err != nil {
		return rebuilt{}, 0, err
	}
	defer c.Close()
	r := rebuilt{lo: start}
	pos := start
	for {
		b, err := c.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return r, 0, err
		}
		progressed(up.ctx)
		if !isZero(b) {
			e := &Extent{Off: pos, Len: uint64(len(b))}
			r.ext = append(r.ext, e)
			if err := up.store(e, slices.Clone(b)); err != nil {
				return r, 0, err
			}
		}
		pos += uint64(len(b))
		for i < len(dirty) && dirty[i].end() <= pos {
			i++
		}
		if i < len(dirty) && uint64(dirty[i].off) <= pos {
			continue // within the writes
		}
		aligned, err := o.endsAt(pos)
		if err != nil {
			return r, 0, err
		}
		if aligned {
			break
		}
	}
	r.hi = pos
	for i < len(dirty) && dirty[i].end() <= pos {
		i++
	}
	return r, i, nil
}

// applyRebuilt returns extents (sorted) with those whose offsets lie in a
// rebuilt range replaced by its new ones.
func applyRebuilt(extents []Extent, rs []rebuilt) []Extent {
	out := make([]Extent, 0, len(extents))
	j := 0
	for _, e := range extents {
		for j < len(rs) && rs[j].hi <= e.Off {
			j++
		}
		if j < len(rs) && rs[j].lo <= e.Off {
			continue
		}
		out = append(out, e)
	}
	for _, r := range rs {
		for _, e := range r.ext {
			out = append(out, *e)
		}
	}
	slices.SortFunc(out, func(a, b Extent) int { return cmpUint(a.Off, b.Off) })
	return out
}

// errFileTooFragmented means a page would hold more extents than a page
// may.
var errFileTooFragmented = fmt.Errorf("a page of the file would hold over %d extents: %w", maxPageExtents, syscall.EFBIG)

// rewrite returns a with the writes in dirty applied, and the changes to
// its pages that go with it.
func (f *FS) rewrite(ctx context.Context, id ID, a Attr, dirty []span) (Attr, []txlog.Change, error) {
	size := max(a.Size, spansEnd(dirty))
	na := a
	na.Size = size
	if size <= InlineMax && !a.Paged() {
		// Small enough to keep in the record: read what is there, lay
		// the writes over it.
		buf := make([]byte, size)
		if a.Size > 0 {
			if _, err := f.ReadAt(ctx, id, a, buf[:a.Size], 0); err != nil && !errors.Is(err, io.EOF) {
				return Attr{}, nil, err
			}
		}
		for _, s := range dirty {
			copy(buf[s.off:], s.data)
		}
		na.Inline, na.Extents = buf, nil
		return na, nil, nil
	}
	if a.Inline != nil {
		// Leaving the record: its bytes are rewritten with the writes
		// over them.
		w := Writer{dirty: []span{{0, a.Inline}}}
		for _, s := range dirty {
			w.add(s)
		}
		dirty, na.Inline, a.Inline = w.dirty, nil, nil
	}
	o := f.oldFile(ctx, id, a)
	rs, err := f.rebuild(ctx, o, dirty, size)
	if err != nil {
		return Attr{}, nil, err
	}
	if !a.Paged() {
		ext := applyRebuilt(a.Extents, rs)
		if len(ext) <= maxInlineExtents && size <= 1<<f.pageShift {
			na.Extents = ext
			return na, nil, nil
		}
		// Too many for the record: the file becomes paged.
		na.Extents, na.PageShift = nil, f.pageShift
		changes, err := f.repage(id, &na, ext, nil)
		return na, changes, err
	}
	// Only the pages that lose or gain extents change.
	touched := map[uint64]bool{}
	var ext []Extent
	touch := func(idx uint64) error {
		if touched[idx] {
			return nil
		}
		touched[idx] = true
		page, err := o.page(idx)
		ext = append(ext, page...)
		return err
	}
	for _, r := range rs {
		for _, e := range r.ext {
			if err := touch(e.Off >> a.PageShift); err != nil {
				return Attr{}, nil, err
			}
		}
		first := r.lo >> a.PageShift
		if first > 0 {
			first--
		}
		for idx := first; idx <= (r.hi-1)>>a.PageShift; idx++ {
			page, err := o.page(idx)
			if err != nil {
				return Attr{}, nil, err
			}
			if len(overlapping(page, r.lo, r.hi)) > 0 {
				if err := touch(idx); err != nil {
					return Attr{}, nil, err
				}
			}
		}
	}
	slices.SortFunc(ext, func(a, b Extent) int { return cmpUint(a.Off, b.Off) })
	changes, err := f.repage(id, &na, applyRebuilt(ext, rs), touched)
	return na, changes, err
}

// repage lays ext, the new extents of the pages in touched (of every page,
// if touched is nil), out in pages: na's page list is updated and the
// changes returned write the new versions and delete the old.
func (f *FS) repage(id ID, na *Attr, ext []Extent, touched map[uint64]bool) ([]txlog.Change, error) {
	byPage := map[uint64][]Extent{}
	for idx := range touched {
		byPage[idx] = nil
	}
	for _, e := range ext {
		idx := e.Off >> na.PageShift
		byPage[idx] = append(byPage[idx], e)
		if len(byPage[idx]) > maxPageExtents {
			return nil, errFileTooFragmented
		}
	}
	changes := pageChanges(id.Num, na, byPage)
	for _, p := range na.Pages {
		if page, ok := byPage[p.Index]; ok {
			f.pages.add(pageKey{id.Part, id.Num, p.Index, p.Ver}, page)
		}
	}
	return changes, nil
}
