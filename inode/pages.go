package inode

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/difuse/difuse/internal/codec"
	"github.com/difuse/difuse/txlog"
)

// A paged file keeps its extents in page records beside its inode, in its
// partition: page i of inode n, version v, is the record PageRecord(n, i,
// v), holding the extents whose offsets lie in the file's span i (from
// i<<PageShift, 1<<PageShift bytes). The inode lists the pages it has and
// their versions (Attr.Pages); a change writes each page it touches under a
// new version and deletes the old one, in the transaction that writes the
// inode. So a change costs the pages it touches, whatever the file's size,
// and a record that the inode does not name is garbage that nothing reads.

// PagePrefix starts every page record's name. It sorts before the entries
// ("d/"), so that a listing of a directory's entries and inodes can skip
// the pages.
const PagePrefix = "b/"

// DefaultPageShift makes pages of 64 MiB of file: about 64 extents of
// 1 MiB blocks, 3 KiB.
const DefaultPageShift = 26

// maxInlineExtents is the most extents an unpaged file keeps in its inode
// record; one that would have more (or grows past one page span) becomes
// paged.
const maxInlineExtents = 64

// maxPageExtents bounds one page: at 48 bytes an extent, a page stays well
// under a write's limit. A change that would make a page larger fails
// with EFBIG; only many tiny writes far apart, in one span, come near it.
const maxPageExtents = 8192

// PageRecord returns the record name of version ver of page index of inode
// num.
func PageRecord(num, index, ver uint64) string {
	return fmt.Sprintf("%s%016x/%016x.%016x", PagePrefix, num, index, ver)
}

// ParsePageRecord returns the inode number, page index and version a page
// record's name holds.
func ParsePageRecord(name string) (num, index, ver uint64, ok bool) {
	rest, ok := strings.CutPrefix(name, PagePrefix)
	if !ok || len(rest) != 16+1+16+1+16 || rest[16] != '/' || rest[33] != '.' {
		return 0, 0, 0, false
	}
	var err [3]error
	num, err[0] = strconv.ParseUint(rest[:16], 16, 64)
	index, err[1] = strconv.ParseUint(rest[17:33], 16, 64)
	ver, err[2] = strconv.ParseUint(rest[34:], 16, 64)
	return num, index, ver, errors.Join(err[:]...) == nil
}

const pageVersion = 1

// EncodePage returns a page record's value: its extents, in order.
func EncodePage(extents []Extent) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+48*len(extents))
	b = append(b, pageVersion)
	b = binary.AppendUvarint(b, uint64(len(extents)))
	for _, e := range extents {
		b = binary.BigEndian.AppendUint64(b, e.Off)
		b = binary.BigEndian.AppendUint64(b, e.Len)
		b = append(b, e.Block[:]...)
	}
	return b
}

// DecodePage reads a page record's value. It never panics.
func DecodePage(b []byte) ([]Extent, error) {
	d := codec.NewDecoder(b, errDecode)
	if v := d.Byte(); v != pageVersion {
		return nil, fmt.Errorf("%w: page version %d", errDecode, v)
	}
	n := d.Count(48)
	out := make([]Extent, 0, n)
	for range n {
		e := Extent{Off: d.Uint64(), Len: d.Uint64()}
		copy(e.Block[:], d.Take(32))
		out = append(out, e)
	}
	if err := d.Finish(); err != nil {
		return nil, err
	}
	for i, e := range out {
		if e.Len == 0 || e.Off+e.Len < e.Off || i > 0 && out[i-1].Off+out[i-1].Len > e.Off {
			return nil, fmt.Errorf("%w: page extents out of order", errDecode)
		}
	}
	return out, nil
}

// errStalePage means a page an inode named is gone: the inode changed
// since it was read. The caller reads the inode again.
var errStalePage = errors.New("inode changed while its pages were read")

// pageKey names one version of one page.
type pageKey struct {
	part, num, index, ver uint64
}

// pageCache keeps pages as read: a version never changes, so a kept one is
// always right. It is bounded by count and by extents.
type pageCache struct {
	mu      sync.Mutex
	c       *simplelru.LRU[pageKey, []Extent]
	extents int
}

// Bounds of the page cache: 1,024 pages, and 256 Ki extents (12 MiB).
const (
	maxCachedPages   = 1024
	maxCachedExtents = 256 << 10
)

func newPageCache() *pageCache {
	pc := &pageCache{}
	pc.c, _ = simplelru.NewLRU(maxCachedPages, func(_ pageKey, v []Extent) { pc.extents -= len(v) }) // fails only for a size below 1
	return pc
}

func (pc *pageCache) get(k pageKey) ([]Extent, bool) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.c.Get(k)
}

func (pc *pageCache) add(k pageKey, v []Extent) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.c.Contains(k) {
		return
	}
	pc.c.Add(k, v)
	pc.extents += len(v)
	for pc.extents > maxCachedExtents && pc.c.Len() > 1 {
		pc.c.RemoveOldest()
	}
}

// page returns the extents of page p of file id, from the cache or read
// now (errStalePage if the record is gone).
func (f *FS) page(ctx context.Context, id ID, p PageRef) ([]Extent, error) {
	k := pageKey{id.Part, id.Num, p.Index, p.Ver}
	if ext, ok := f.pages.get(k); ok {
		return ext, nil
	}
	resp, err := f.log.Do(ctx, txlog.Request{Partition: PartitionName(id.Part), Level: f.levels.Read, Kind: txlog.KindRead, Name: PageRecord(id.Num, p.Index, p.Ver)})
	if err != nil {
		return nil, errno(err)
	}
	if !resp.Record.Exists {
		return nil, fmt.Errorf("page %d of inode %s: %w", p.Index, id, errStalePage)
	}
	ext, err := DecodePage(resp.Record.Value)
	if err != nil {
		return nil, fmt.Errorf("page %d of inode %s: %w: %v", p.Index, id, syscall.EIO, err)
	}
	f.pages.add(k, ext)
	return ext, nil
}

// overlapping returns the extents of sorted that overlap [lo, hi).
func overlapping(sorted []Extent, lo, hi uint64) []Extent {
	i, _ := slices.BinarySearchFunc(sorted, lo, func(e Extent, lo uint64) int {
		if e.Off+e.Len <= lo {
			return -1
		}
		return 1
	})
	j := i
	for j < len(sorted) && sorted[j].Off < hi {
		j++
	}
	return sorted[i:j]
}

// Extents returns the extents of file id, whose attributes are a, that
// overlap [lo, hi), in order. The slice is shared: callers must not
// change it.
func (f *FS) Extents(ctx context.Context, id ID, a Attr, lo, hi uint64) ([]Extent, error) {
	if hi <= lo {
		return nil, nil
	}
	if !a.Paged() {
		return overlapping(a.Extents, lo, hi), nil
	}
	// An extent lies in the page of its offset and is at most a span
	// long, so the page before the first may reach into the range.
	first, last := lo>>a.PageShift, (hi-1)>>a.PageShift
	if first > 0 {
		first--
	}
	i, _ := slices.BinarySearchFunc(a.Pages, first, func(p PageRef, idx uint64) int { return cmpUint(p.Index, idx) })
	var out []Extent
	for ; i < len(a.Pages) && a.Pages[i].Index <= last; i++ {
		ext, err := f.page(ctx, id, a.Pages[i])
		if err != nil {
			return nil, err
		}
		if out == nil && (i+1 == len(a.Pages) || a.Pages[i+1].Index > last) {
			return overlapping(ext, lo, hi), nil // one page: no copy
		}
		out = append(out, overlapping(ext, lo, hi)...)
	}
	return out, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// pageChanges sets the pages of inode num (attributes a) that touched
// holds to their new extents, each under a new version (a page left with
// none is dropped), updates a's page list, and returns the changes that
// write the new versions and delete the old ones.
func pageChanges(num uint64, a *Attr, touched map[uint64][]Extent) []txlog.Change {
	var changes []txlog.Change
	pages := make(map[uint64]uint64, len(a.Pages))
	for _, p := range a.Pages {
		pages[p.Index] = p.Ver
	}
	for _, idx := range slices.Sorted(maps.Keys(touched)) {
		ext := touched[idx]
		if old, ok := pages[idx]; ok {
			changes = append(changes, txlog.Change{Name: PageRecord(num, idx, old), Delete: true})
			delete(pages, idx)
		}
		if len(ext) > 0 {
			a.PageVer++
			ver := a.PageVer
			pages[idx] = ver
			changes = append(changes, txlog.Change{Name: PageRecord(num, idx, ver), Value: EncodePage(ext)})
		}
	}
	a.Pages = a.Pages[:0:0]
	for idx, ver := range pages {
		a.Pages = append(a.Pages, PageRef{Index: idx, Ver: ver})
	}
	slices.SortFunc(a.Pages, func(x, y PageRef) int { return cmpUint(x.Index, y.Index) })
	slices.SortFunc(changes, func(x, y txlog.Change) int { return strings.Compare(x.Name, y.Name) })
	return changes
}

// SeekData returns the offset of the first byte of data of file id
// (attributes a) at or after off: ENXIO if only a hole follows (a file's
// end counts as a hole).
func (f *FS) SeekData(ctx context.Context, id ID, a Attr, off int64) (int64, error) {
	if off < 0 || uint64(off) >= a.Size {
		return 0, fmt.Errorf("seek data at %d of %d: %w", off, a.Size, syscall.ENXIO)
	}
	if a.Inline != nil || a.Type != TypeFile {
		return off, nil
	}
	found := int64(-1)
	err := f.scanExtents(ctx, id, a, uint64(off), func(e Extent) bool {
		found = int64(max(e.Off, uint64(off)))
		return false
	})
	switch {
	case err != nil:
		return 0, err
	case found < 0:
		return 0, fmt.Errorf("seek data at %d: only a hole follows: %w", off, syscall.ENXIO)
	}
	return found, nil
}

// SeekHole returns the offset of the first byte of a hole of file id
// (attributes a) at or after off; the file's end is one. ENXIO at or past
// the end.
func (f *FS) SeekHole(ctx context.Context, id ID, a Attr, off int64) (int64, error) {
	if off < 0 || uint64(off) >= a.Size {
		return 0, fmt.Errorf("seek hole at %d of %d: %w", off, a.Size, syscall.ENXIO)
	}
	if a.Inline != nil || a.Type != TypeFile {
		return int64(a.Size), nil
	}
	pos := uint64(off)
	err := f.scanExtents(ctx, id, a, pos, func(e Extent) bool {
		if e.Off > pos {
			return false // a hole before this extent
		}
		pos = max(pos, e.Off+e.Len)
		return true
	})
	return int64(min(pos, a.Size)), err
}

// scanExtents calls fn with the extents of file id (attributes a) that end
// past from, in order, a page span at a time (skipping the spans a paged
// file has no page for: holes), until fn returns false.
func (f *FS) scanExtents(ctx context.Context, id ID, a Attr, from uint64, fn func(Extent) bool) error {
	shift := uint8(DefaultPageShift)
	if a.Paged() {
		shift = a.PageShift
	}
	for lo := from; lo < a.Size; {
		hi := min((lo>>shift+1)<<shift, a.Size)
		ext, err := f.Extents(ctx, id, a, lo, hi)
		if err != nil {
			return err
		}
		for _, e := range ext {
			if e.Off+e.Len > from && !fn(e) {
				return nil
			}
		}
		lo = hi
		if a.Paged() {
			i, _ := slices.BinarySearchFunc(a.Pages, lo>>shift, func(p PageRef, idx uint64) int { return cmpUint(p.Index, idx) })
			if i == len(a.Pages) {
				return nil
			}
			lo = max(lo, a.Pages[i].Index<<shift)
		}
	}
	return nil
}
