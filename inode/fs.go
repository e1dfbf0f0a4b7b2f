package inode

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/store"
	"github.com/difuse/difuse/txlog"
)

// Log runs transaction-log requests; *txlog.Service implements it.
type Log interface {
	Do(ctx context.Context, req txlog.Request) (txlog.Response, error)
}

// deadRecord marks a removed directory's partition: creates there check
// that it is absent, and rmdir writes it only while no entry is left.
const deadRecord = "dead"

// Levels choose the consistency of the filesystem's operations.
type Levels struct {
	// Read is the level of lookups, attribute reads and listings. Default
	// leader.
	Read level.Level
	// Write is the level of every metadata change. Default quorum.
	Write level.Level
	// Blocks is the level of block reads. Default leader.
	Blocks level.Level
	// BlockWrite is the level of block writes. Default quorum.
	BlockWrite level.Level
}

// DefaultLevels are the levels an FS uses unless told otherwise.
var DefaultLevels = Levels{Read: level.Leader, Write: level.Quorum, Blocks: level.Leader, BlockWrite: level.Quorum}

// Options configure an FS.
type Options struct {
	// Levels are the consistency levels; nil takes DefaultLevels.
	Levels *Levels
	// Chunk bounds the blocks files are cut into.
	Chunk blockstore.ChunkOptions
	// CacheBlocks is how many blocks reads keep in memory (blocks never
	// change, so a cached one is always right), and CacheBytes how many
	// bytes they may take. Defaults 32 and 64 MiB.
	CacheBlocks int
	CacheBytes  int64
	// ReadAhead is how many bytes past a sequential read Prefetch fetches.
	// Default 4 MiB.
	ReadAhead int
	// PageShift sets the span of a page of the files that become paged
	// here (1<<PageShift bytes; see Attr.PageShift). Default
	// DefaultPageShift; a page spans at least Chunk.Max.
	PageShift uint8
	// Clock gives the times inodes are stamped with. Default time.Now.
	Clock func() time.Time
}

// FS runs the filesystem's operations as transactions of the logs, and
// keeps file contents in blocks. It is safe for concurrent use.
type FS struct {
	log    Log
	blocks Blocks
	levels Levels
	chunk  blockstore.ChunkOptions
	cache  *blockCache
	// dirs maps directories to their entries' partitions.
	dirs *lru.Cache[ID, uint64]
	// known keeps records as last read or written, for changes to start
	// from; pages keeps pages of paged files as read or written.
	known *known
	pages *pageCache
	// pageShift is Options.PageShift.
	pageShift uint8
	// onChange, if set, hears of every inode this FS writes; isOpen, if
	// set, says whether the kernel has a file open here (KeepOpen).
	onChange func(ID)
	isOpen   func(ID) bool
	clock    func() time.Time
	// readAhead is Options.ReadAhead; inflight holds the block fetches
	// under way, guarded by mu.
	readAhead int
	mu        sync.Mutex
	inflight  map[blockstore.Hash]*fetch
	// hits and misses count the block reads the cache (or a fetch already
	// under way, a read-ahead's say) answered, and those it did not.
	hits, misses atomic.Int64
	// dirty counts the bytes of writes Writers hold, buffered or being
	// committed.
	dirty atomic.Int64
}

// Dirty returns the bytes of writes held by the FS's writers, buffered or
// being committed in the background.
func (f *FS) Dirty() int64 { return f.dirty.Load() }

func (f *FS) addDirty(n int64) { f.dirty.Add(n) }

// CacheStats returns how many block reads the cache (or a fetch already
// under way) answered, and how many had to fetch.
func (f *FS) CacheStats() (hits, misses int64) { return f.hits.Load(), f.misses.Load() }

// maxDirs bounds how many directories' partitions an FS remembers.
const maxDirs = 1 << 16

// New returns the filesystem kept in log and blocks. Options that cannot
// work together are an error.
func New(log Log, blocks Blocks, opts Options) (*FS, error) {
	levels := DefaultLevels
	if opts.Levels != nil {
		levels = *opts.Levels
	}
	if opts.CacheBlocks <= 0 {
		opts.CacheBlocks = 32
	}
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = 64 << 20
	}
	if opts.ReadAhead <= 0 {
		opts.ReadAhead = 4 << 20
	}
	if opts.PageShift == 0 {
		opts.PageShift = DefaultPageShift
	}
	maxChunk := opts.Chunk.Max
	if maxChunk == 0 {
		maxChunk = blockstore.DefaultMaxChunk
	}
	if opts.PageShift < minPageShift || opts.PageShift > maxPageShift || maxChunk > 1<<opts.PageShift {
		return nil, fmt.Errorf("inode: a page of 1<<%d bytes for blocks of up to %d: want a shift from %d to %d, and blocks no larger than a page",
			opts.PageShift, maxChunk, minPageShift, maxPageShift)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	dirs, _ := lru.New[ID, uint64](maxDirs) // fails only for a size below 1
	return &FS{log: log, blocks: blocks, levels: levels, chunk: opts.Chunk, cache: newBlockCache(opts.CacheBlocks, opts.CacheBytes), dirs: dirs, known: newKnown(), pages: newPageCache(),
		pageShift: opts.PageShift, clock: opts.Clock, readAhead: opts.ReadAhead, inflight: map[blockstore.Hash]*fetch{}}, nil
}

// Now returns the time of the filesystem's clock (Options.Clock).
func (f *FS) Now() time.Time { return f.clock() }

// OnChange has fn called with every inode this FS changes or deletes,
// once the write has ended (committed or not: either way what was known
// of the inode before is stale). Call it before the FS is used.
func (f *FS) OnChange(fn func(ID)) { f.onChange = fn }

// Init creates the root directory if it does not exist yet.
func (f *FS) Init(ctx context.Context) error {
	now := f.clock().UnixNano()
	root := Attr{Type: TypeDir, Mode: 0o755, Nlink: 1, Atime: now, Mtime: now, Ctime: now, Children: RootChildren}
	var zero txlog.Hash
	_, err := f.log.Do(ctx, txlog.Request{Partition: PartitionName(Root.Part), Level: f.levels.Write, Kind: txlog.KindWrite,
		Write: []txlog.Change{{Name: InodeRecord(Root.Num), Value: EncodeAttr(root), IfMatch: &zero}}})
	if errors.Is(err, txlog.ErrConflict) {
		return nil // it exists
	}
	return err
}

// GetAttr returns an inode's attributes and the hash of the transaction
// that last changed them.
func (f *FS) GetAttr(ctx context.Context, id ID) (Attr, txlog.Hash, error) {
	return readRecord(ctx, f, id.Part, InodeRecord(id.Num), "inode "+id.String(), DecodeAttr)
}

// readRecord reads a record of partition part at the read level and
// decodes it: ENOENT if it does not exist, EIO if it does not decode; what
// names it in errors.
func readRecord[T any](ctx context.Context, f *FS, part uint64, name, what string, decode func([]byte) (T, error)) (T, txlog.Hash, error) {
	return readRecordAt(ctx, f, f.levels.Read, part, name, what, decode)
}

// readRecordAt is readRecord at level lv.
func readRecordAt[T any](ctx context.Context, f *FS, lv level.Level, part uint64, name, what string, decode func([]byte) (T, error)) (T, txlog.Hash, error) {
	var zero T
	resp, err := f.log.Do(ctx, txlog.Request{Partition: PartitionName(part), Level: lv, Kind: txlog.KindRead, Name: name})
	if err != nil {
		f.known.forget(part, name)
		return zero, txlog.Hash{}, errno(err)
	}
	if !resp.Record.Exists {
		f.known.forget(part, name)
		return zero, txlog.Hash{}, fmt.Errorf("%s: %w", what, syscall.ENOENT)
	}
	v, err := decode(resp.Record.Value)
	if err != nil {
		f.known.forget(part, name)
		return zero, txlog.Hash{}, fmt.Errorf("%s: %w: %v", what, syscall.EIO, err)
	}
	f.known.note(part, name, resp.Record.Value, resp.Record.Hash)
	return v, resp.Record.Hash, nil
}

// children returns the partition of a directory's entries. A directory
// keeps its partition for life, so the answer is kept too.
func (f *FS) children(ctx context.Context, dir ID) (uint64, error) {
	if part, ok := f.dirs.Get(dir); ok {
		return part, nil
	}
	a, _, err := f.GetAttr(ctx, dir)
	if err != nil {
		return 0, err
	}
	if a.Type != TypeDir {
		return 0, fmt.Errorf("inode %s: %w", dir, syscall.ENOTDIR)
	}
	f.dirs.Add(dir, a.Children)
	return a.Children, nil
}

// entry reads a directory entry of partition part, and its hash.
func (f *FS) entry(ctx context.Context, part uint64, name string) (Entry, txlog.Hash, error) {
	return readRecord(ctx, f, part, EntryRecord(name), strconv.Quote(name), DecodeEntry)
}

// entryAt is entry at level lv.
func (f *FS) entryAt(ctx context.Context, lv level.Level, part uint64, name string) (Entry, txlog.Hash, error) {
	return readRecordAt(ctx, f, lv, part, EntryRecord(name), strconv.Quote(name), DecodeEntry)
}

// Lookup returns the entry called name in directory dir.
func (f *FS) Lookup(ctx context.Context, dir ID, name string) (Entry, error) {
	if err := checkName(name); err != nil {
		return Entry{}, err
	}
	part, err := f.children(ctx, dir)
	if err != nil {
		return Entry{}, err
	}
	e, _, err := f.liveEntry(ctx, part, name, false)
	return e, err
}

// DirEntry is one entry of a listing.
type DirEntry struct {
	Name string
	Entry
	// Attr is the inode's attributes as the listing read them, for the
	// inodes that live in the directory's own partition (those created in
	// it); nil for others.
	Attr *Attr
}

// Readdir lists directory dir, in name order, with the attributes of the
// inodes its partition holds: one listing of the partition gives both, so
// that a listing with attributes (ls -l) need not read every inode.
func (f *FS) Readdir(ctx context.Context, dir ID) ([]DirEntry, error) {
	part, err := f.children(ctx, dir)
	if err != nil {
		return nil, err
	}
	var out []DirEntry
	attrs := map[uint64]Attr{}
	err = f.list(ctx, part, false, func(name string, e Entry, _ txlog.Hash) {
		out = append(out, DirEntry{Name: name, Entry: e})
	}, func(num uint64, a Attr) { attrs[num] = a })
	for i, e := range out {
		if a, ok := attrs[e.ID.Num]; ok && e.ID.Part == part {
			out[i].Attr = &a
		}
	}
	return out, err
}

// list calls fn with every entry of partition part, in name order, as
// users see them (see liveEntry, which settles marked entries), and its
// record's hash as read; with inodes set, it also calls that with every
// inode of the partition.
func (f *FS) list(ctx context.Context, part uint64, settle bool, fn func(string, Entry, txlog.Hash), inodes func(uint64, Attr)) error {
	after, prefix := "", entryPrefix
	if inodes != nil {
		// The whole partition but the pages of large files ("b/"),
		// which sort before the entries.
		after, prefix = "c", ""
	}
	for {
		resp, err := f.log.Do(ctx, txlog.Request{Partition: PartitionName(part), Level: f.levels.Read, Kind: txlog.KindList, Name: prefix, After: after})
		if err != nil {
			return errno(err)
		}
		for _, r := range resp.Records {
			after = r.Name
			f.known.note(part, r.Name, r.Value, r.Hash)
			if num, ok := inodeNum(r.Name); ok && inodes != nil {
				a, err := DecodeAttr(r.Value)
				if err != nil {
					return fmt.Errorf("inode %016x: %w: %v", num, syscall.EIO, err)
				}
				inodes(num, a)
				continue
			}
			name, ok := EntryName(r.Name)
			if !ok {
				continue // the partition's other records
			}
			e, err := DecodeEntry(r.Value)
			if err != nil {
				return fmt.Errorf("%q: %w: %v", name, syscall.EIO, err)
			}
			h := r.Hash
			if e.Move != nil {
				e, h, err = f.liveEntry(ctx, part, name, settle)
				if errors.Is(err, syscall.ENOENT) {
					continue
				}
				if err != nil {
					return err
				}
			}
			fn(name, e, h)
		}
		if !resp.More {
			return nil
		}
	}
}

// NewAttr describes an inode to create.
type NewAttr struct {
	Type     Type
	Mode     uint32
	UID, GID uint32
	// Target is a symlink's target.
	Target string
	// Rdev is a device's number.
	Rdev uint64
}

// Create makes the entry name in directory dir for a new inode, in one
// transaction of the directory's partition, and returns its id and
// attributes. An existing name is EEXIST; a directory removed meanwhile
// is ENOENT.
func (f *FS) Create(ctx context.Context, dir ID, name string, na NewAttr) (ID, Attr, error) {
	if err := checkName(name); err != nil {
		return ID{}, Attr{}, err
	}
	part, err := f.children(ctx, dir)
	if err != nil {
		return ID{}, Attr{}, err
	}
	now := f.clock().UnixNano()
	a := Attr{Type: na.Type, Mode: na.Mode & 0o7777, UID: na.UID, GID: na.GID, Nlink: 1, Atime: now, Mtime: now, Ctime: now}
	switch na.Type {
	case TypeDir:
		a.Children = randomID()
	case TypeSymlink:
		a.Target, a.Size = na.Target, uint64(len(na.Target))
	case TypeCharDev, TypeBlockDev:
		a.Rdev = na.Rdev
	case TypeFile, TypeFifo, TypeSocket:
	default:
		return ID{}, Attr{}, fmt.Errorf("create %q: type %d: %w", name, na.Type, syscall.EINVAL)
	}
	id := ID{Part: part, Num: randomID()}
	var zero txlog.Hash
	err = retry("create "+strconv.Quote(name), func() error {
		dc, err := f.dirChanges(ctx, part, subdirDelta(na.Type, 0), now)
		if err != nil {
			return err
		}
		_, err = f.write(ctx, part, append([]txlog.Change{
			{Name: deadRecord, Check: true, IfMatch: &zero},
			{Name: EntryRecord(name), Value: EncodeEntry(Entry{ID: id, Type: na.Type}), IfMatch: &zero},
			{Name: InodeRecord(id.Num), Value: EncodeAttr(a), IfMatch: &zero}}, dc...)...)
		if errors.Is(err, errRaced) {
			return f.taken(ctx, part, name)
		}
		return err
	})
	if err != nil {
		return ID{}, Attr{}, err
	}
	if a.Type == TypeDir {
		a.Nlink = 2 // as Stat shows it
	}
	return id, a, nil
}

// checkName refuses names POSIX does not allow in a directory.
func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("name %q: %w", name, syscall.EINVAL)
	case len(name) > 255:
		return fmt.Errorf("name of %d bytes: %w", len(name), syscall.ENAMETOOLONG)
	}
	for i := range len(name) {
		if name[i] == '/' || name[i] == 0 {
			return fmt.Errorf("name %q: %w", name, syscall.EINVAL)
		}
	}
	return nil
}

// errno marks a failure with the errno a caller reports: EINVAL for a
// request the log refuses, ENOSPC for a full disk, EIO when the replicas
// needed are not there.
func errno(err error) error {
	if err == nil {
		return nil
	}
	var e syscall.Errno
	switch {
	case errors.As(err, &e):
		return err
	case errors.Is(err, txlog.ErrBadRequest):
		return fmt.Errorf("%w: %v", syscall.EINVAL, err)
	case errors.Is(err, store.ErrNoSpace):
		return fmt.Errorf("%w: %v", syscall.ENOSPC, err)
	}
	return fmt.Errorf("%w: %w", syscall.EIO, err)
}

// randomID returns a random 64-bit id, never 0 or 1 (taken by the root).
func randomID() uint64 {
	for {
		var b [8]byte
		rand.Read(b[:])
		if v := binary.BigEndian.Uint64(b[:]); v > 1 {
			return v
		}
	}
}
