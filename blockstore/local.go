package blockstore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/difuse/difuse/store"
	"github.com/zeebo/blake3"
)

// Errors callers branch on.
var (
	// ErrNotFound: the block is not in the store.
	ErrNotFound = errors.New("blockstore: block not found")
	// ErrCorrupt: a block's bytes do not hash to its name.
	ErrCorrupt = errors.New("blockstore: block corrupt")
)

// Local is one node's store of blocks: a file per block, under a directory
// beside the node's database (dir/ab/abcd…, by the hash's first byte).
// Writing and syncing a 1 MiB block this way runs as fast as putting it
// into Badger and syncing (docs/blockstore.md), and deleting a block frees
// its space at once, where Badger's value log would need collection passes
// that rewrite live data. Every read re-hashes the block. It is safe for
// concurrent use.
type Local struct {
	dir   string
	space func(n int64) error
	// clock notes when blocks are used (see SetClock).
	clock func() time.Time
	// locks serialise the check-and-write of blocks whose hashes share a
	// first byte, so that counts stay exact under concurrent puts.
	locks [64]sync.Mutex
	// blocks and stored count what the store holds.
	blocks, stored atomic.Int64
}

// tmpPrefix starts the name of a block being written; a crash can leave
// one behind, and OpenLocal removes it.
const tmpPrefix = ".tmp-"

// OpenLocal returns the block store in dir, creating it if need be, and
// counts what it holds. space, if not nil, is asked before every write
// whether that many more bytes fit (the node's store keeps a reserve).
func OpenLocal(dir string, space func(n int64) error) (*Local, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blockstore: %w", err)
	}
	l := &Local{dir: dir, space: space, clock: time.Now}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.HasPrefix(d.Name(), tmpPrefix) {
			return os.Remove(path) // a write the process did not finish
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		l.blocks.Add(1)
		l.stored.Add(info.Size())
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("blockstore: count the blocks in %s: %w", dir, err)
	}
	return l, nil
}

func (l *Local) lock(h Hash) *sync.Mutex { return &l.locks[h[0]%64] }

// SetClock makes the store note when blocks are put and touched (their
// files' modification times) by clock instead of the wall clock, as the
// garbage collector reckons their ages by the host's clock (gc.Config).
// Call it before the store is used.
func (l *Local) SetClock(clock func() time.Time) { l.clock = clock }

// Path returns the file block h is kept in (which need not exist).
func (l *Local) Path(h Hash) string {
	s := h.String()
	return filepath.Join(l.dir, s[:2], s)
}

// Put stores data under its hash, unless a sound block of that hash is
// already there (a damaged one is replaced), and returns the hash and
// whether it was new. With sync the block is on disk when Put returns.
func (l *Local) Put(data []byte, sync bool) (Hash, bool, error) {
	h := Sum(data)
	added, err := l.put(h, data, sync)
	return h, added, err
}

// PutHashed stores data that the caller says hashes to h, after checking
// that it does (ErrCorrupt otherwise); it returns whether it was new.
func (l *Local) PutHashed(h Hash, data []byte, sync bool) (bool, error) {
	if Sum(data) != h {
		return false, fmt.Errorf("%w: %d bytes sent as %s hash to %s", ErrCorrupt, len(data), h, Sum(data))
	}
	return l.put(h, data, sync)
}

func (l *Local) put(h Hash, data []byte, sync bool) (bool, error) {
	mu := l.lock(h)
	mu.Lock()
	defer mu.Unlock()
	path := l.Path(h)
	var old int64 = -1
	if info, err := os.Stat(path); err == nil {
		// Already here. Senders ask first, so a put of a block already
		// held is rare, and mostly a repair: keep the copy only if sound.
		if _, err := l.Get(h); !errors.Is(err, ErrCorrupt) {
			if err == nil {
				now := l.clock() // used now, as Touch marks it
				err = os.Chtimes(path, now, now)
			}
			return false, err
		}
		old = info.Size()
	}
	if l.space != nil {
		if err := l.space(int64(len(data))); err != nil {
			return false, fmt.Errorf("blockstore: put %s: %w", h, err)
		}
	}
	if err := writeFile(path, data, sync, l.clock()); err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			err = fmt.Errorf("%w: %w", store.ErrNoSpace, err)
		}
		return false, fmt.Errorf("blockstore: put %s: %w", h, err)
	}
	if old >= 0 {
		l.stored.Add(int64(len(data)) - old) // a damaged copy replaced
		return false, nil
	}
	l.blocks.Add(1)
	l.stored.Add(int64(len(data)))
	return true, nil
}

// writeFile writes data to path, modified at mtime, through a temporary
// file renamed into place, so that a reader never sees half a block; with
// sync, file and directory are synced first.
func writeFile(path string, data []byte, sync bool, mtime time.Time) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, tmpPrefix)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(dir, 0o700); err == nil {
			f, err = os.CreateTemp(dir, tmpPrefix)
		}
	}
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = os.Chtimes(f.Name(), mtime, mtime)
	}
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	if sync {
		return syncDir(dir)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Has reports whether the store holds a block of hash h, without reading it.
func (l *Local) Has(h Hash) (bool, error) {
	_, err := os.Stat(l.Path(h))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("blockstore: has %s: %w", h, err)
	}
	return true, nil
}

// Touch reports whether the store holds block h, and if it does marks it
// used now (its file's modification time): the garbage collector keeps a
// block used within its grace time even if no file refers to it yet.
// Touch and Sweep exclude each other per block, so a block Touch reports
// held is not swept on the strength of an older time.
func (l *Local) Touch(h Hash) (bool, error) {
	mu := l.lock(h)
	mu.Lock()
	defer mu.Unlock()
	now := l.clock()
	err := os.Chtimes(l.Path(h), now, now)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("blockstore: touch %s: %w", h, err)
	}
	return true, nil
}

// SweepStats counts what a sweep did: the blocks examined, those freed
// (or a dry run would free), and those unreferenced but kept because they
// were used after the cutoff (Recent).
type SweepStats struct {
	Examined, Freed, FreedBytes, Recent, RecentBytes int64
}

// Sweep deletes the blocks that keep rejects and that were last used (put
// or touched) before cutoff, or with dryRun only counts them. each, if
// set, is called after every block examined (for rate limits and
// progress); an error from it stops the sweep.
func (l *Local) Sweep(keep func(Hash) bool, cutoff time.Time, dryRun bool, each func() error) (SweepStats, error) {
	var st SweepStats
	err := l.Walk(func(h Hash) error {
		st.Examined++
		if !keep(h) {
			out, size, err := l.sweepOne(h, cutoff, dryRun)
			if err != nil {
				return err
			}
			switch out {
			case swept:
				st.Freed++
				st.FreedBytes += size
			case recent:
				st.Recent++
				st.RecentBytes += size
			}
		}
		if each != nil {
			return each()
		}
		return nil
	})
	return st, err
}

// sweepOutcome is what sweepOne did with a block.
type sweepOutcome int

const (
	gone   sweepOutcome = iota // deleted meanwhile
	recent                     // used after the cutoff: kept
	swept                      // deleted (or would be, in a dry run)
)

// sweepOne deletes block h if it was last used before cutoff, and returns
// what it did and the block's size.
func (l *Local) sweepOne(h Hash, cutoff time.Time, dryRun bool) (sweepOutcome, int64, error) {
	mu := l.lock(h)
	mu.Lock()
	defer mu.Unlock()
	path := l.Path(h)
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return gone, 0, nil
	case err != nil:
		return gone, 0, fmt.Errorf("blockstore: sweep %s: %w", h, err)
	case !info.ModTime().Before(cutoff):
		return recent, info.Size(), nil
	case dryRun:
		return swept, info.Size(), nil
	}
	if err := os.Remove(path); err != nil {
		return gone, 0, fmt.Errorf("blockstore: sweep %s: %w", h, err)
	}
	l.blocks.Add(-1)
	l.stored.Add(-info.Size())
	return swept, info.Size(), nil
}

// A Verifier checks blocks against their hashes with one buffer and one
// hasher, which it reuses: a scrub that checks many blocks allocates
// nothing per block. It is for one goroutine at a time.
type Verifier struct {
	buf    []byte
	hasher *blake3.Hasher
}

// NewVerifier returns a Verifier that reads blocks 1 MiB at a time.
func NewVerifier() *Verifier {
	return &Verifier{buf: make([]byte, 1<<20), hasher: blake3.New()}
}

// Verify checks that block h is here and that its bytes hash to h, and
// returns its size: ErrNotFound if it is not here, ErrCorrupt if it is
// damaged. Unlike Get it keeps none of the block.
func (l *Local) Verify(h Hash, v *Verifier) (int64, error) {
	f, err := os.Open(l.Path(h))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, fmt.Errorf("%w: %s", ErrNotFound, h)
	case err != nil:
		return 0, fmt.Errorf("blockstore: verify %s: %w", h, err)
	}
	defer f.Close()
	v.hasher.Reset()
	var size int64
	for {
		// A plain read loop: io.Copy would take os.File's WriteTo, which
		// brings its own buffer.
		n, err := f.Read(v.buf)
		v.hasher.Write(v.buf[:n])
		size += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("blockstore: verify %s: %w", h, err)
		}
	}
	var got Hash
	v.hasher.Sum(got[:0])
	if got != h {
		return size, damaged(h, size, got)
	}
	return size, nil
}

// damaged is the error for block h found holding size bytes that hash to
// got instead.
func damaged(h Hash, size int64, got Hash) error {
	return fmt.Errorf("%w: %s holds %d bytes hashing to %s", ErrCorrupt, h, size, got)
}

// Get returns the block of hash h after checking that its bytes hash to h:
// ErrNotFound if it is not here, ErrCorrupt if it is damaged.
func (l *Local) Get(h Hash) ([]byte, error) {
	data, err := os.ReadFile(l.Path(h))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: %s", ErrNotFound, h)
	case err != nil:
		return nil, fmt.Errorf("blockstore: get %s: %w", h, err)
	}
	if got := Sum(data); got != h {
		return nil, damaged(h, int64(len(data)), got)
	}
	return data, nil
}

// Delete removes the block of hash h, if it is here; with sync the removal
// is on disk when Delete returns.
func (l *Local) Delete(h Hash, sync bool) error {
	mu := l.lock(h)
	mu.Lock()
	defer mu.Unlock()
	path := l.Path(h)
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = os.Remove(path)
	}
	if err == nil && sync {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		return fmt.Errorf("blockstore: delete %s: %w", h, err)
	}
	l.blocks.Add(-1)
	l.stored.Add(-info.Size())
	return nil
}

// Stats describes a node's blocks.
type Stats struct {
	// Blocks and StoredBytes are what the node's own store holds.
	Blocks      int64 `json:"blocks"`
	StoredBytes int64 `json:"stored_bytes"`
	// WrittenBytes counts the bytes clients stored through this node since
	// it started, and NewBytes those of them that some replica did not
	// hold yet.
	WrittenBytes int64 `json:"written_bytes"`
	NewBytes     int64 `json:"new_bytes"`
	// DedupRatio is WrittenBytes / NewBytes: how many bytes were written
	// for each byte that had to be stored anew (0 while none had).
	DedupRatio float64 `json:"dedup_ratio"`
}

// Count returns how many blocks the store holds and their bytes.
func (l *Local) Count() (blocks, bytes int64) { return l.blocks.Load(), l.stored.Load() }

// NewStats returns the Stats of these counts, with the ratio computed.
func NewStats(blocks, stored, written, added int64) Stats {
	st := Stats{Blocks: blocks, StoredBytes: stored, WrittenBytes: written, NewBytes: added}
	if added > 0 {
		st.DedupRatio = float64(written) / float64(added)
	}
	return st
}

// Walk calls fn with the hash of every block held, one directory of the
// 256 at a time, in no particular order. Blocks written or deleted
// meanwhile may or may not be seen; files that are not blocks are skipped.
func (l *Local) Walk(fn func(Hash) error) error {
	for i := range 256 {
		dir := filepath.Join(l.dir, fmt.Sprintf("%02x", i))
		names, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("blockstore: list %s: %w", dir, err)
		}
		for _, e := range names {
			h, err := ParseHash(e.Name())
			if err != nil || e.IsDir() {
				continue
			}
			if err := fn(h); err != nil {
				return err
			}
		}
	}
	return nil
}
