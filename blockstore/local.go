package blockstore

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/difuse/difuse/store"
)

// Errors callers branch on.
var (
	// ErrNotFound: the block is not in the store.
	ErrNotFound = errors.New("blockstore: block not found")
	// ErrCorrupt: a block's bytes do not hash to its name.
	ErrCorrupt = errors.New("blockstore: block corrupt")
)

// kv is the part of the node's store that blocks live in; *store.DB and
// *store.Mem implement it.
type kv interface {
	Get(key []byte) ([]byte, error)
	Size(key []byte) (int64, error)
	Update(fn func(w store.Writer) error) error
	ScanSizes(prefix []byte, fn func(key []byte, size int64) error) error
	Sync() error
}

// blockPrefix starts the store key of every block: "b/" and the hash.
const blockPrefix = "b/"

func blockKey(h Hash) []byte { return append([]byte(blockPrefix), h[:]...) }

// Local is one node's store of blocks, in the node's database. Every read
// re-hashes the block. It is safe for concurrent use.
type Local struct {
	db kv
	// locks serialise the check-and-write of blocks whose hashes share a
	// first byte, so that counts stay exact under concurrent puts.
	locks [64]sync.Mutex
	// blocks and stored count what the store holds; written counts the
	// bytes given to Put since the process started, stored or not, and
	// added those that were new.
	blocks, stored, written, added atomic.Int64
}

func (l *Local) lock(h Hash) *sync.Mutex { return &l.locks[h[0]%64] }

// OpenLocal returns the block store in db, counting what it holds.
func OpenLocal(db kv) (*Local, error) {
	l := &Local{db: db}
	err := db.ScanSizes([]byte(blockPrefix), func(_ []byte, size int64) error {
		l.blocks.Add(1)
		l.stored.Add(size)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("blockstore: count the blocks: %w", err)
	}
	return l, nil
}

// Put stores data under its hash, unless a sound block of that hash is
// already there (a damaged one is replaced), and returns the hash and
// whether it was new. The block is durable after Sync.
func (l *Local) Put(data []byte) (Hash, bool, error) {
	h := Sum(data)
	added, err := l.put(h, data)
	return h, added, err
}

// PutHashed stores data that the caller says hashes to h, after checking
// that it does (ErrCorrupt otherwise); it returns whether it was new.
func (l *Local) PutHashed(h Hash, data []byte) (bool, error) {
	if Sum(data) != h {
		return false, fmt.Errorf("%w: %d bytes sent as %s hash to %s", ErrCorrupt, len(data), h, Sum(data))
	}
	return l.put(h, data)
}

func (l *Local) put(h Hash, data []byte) (bool, error) {
	l.written.Add(int64(len(data)))
	mu := l.lock(h)
	mu.Lock()
	defer mu.Unlock()
	old, err := l.db.Size(blockKey(h))
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return false, fmt.Errorf("blockstore: put %s: %w", h, err)
	default:
		// Already here. Senders ask first, so a put of a block already
		// held is rare, and mostly a repair: keep the copy only if sound.
		if _, err := l.Get(h); !errors.Is(err, ErrCorrupt) {
			return false, err
		}
	}
	if err := l.db.Update(func(w store.Writer) error { return w.Set(blockKey(h), data) }); err != nil {
		return false, fmt.Errorf("blockstore: put %s: %w", h, err)
	}
	if errors.Is(err, store.ErrNotFound) {
		l.blocks.Add(1)
		l.stored.Add(int64(len(data)))
		l.added.Add(int64(len(data)))
		return true, nil
	}
	l.stored.Add(int64(len(data)) - old) // a damaged copy replaced
	return false, nil
}

// Has reports whether the store holds a block of hash h, without reading it.
func (l *Local) Has(h Hash) (bool, error) {
	_, err := l.db.Size(blockKey(h))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("blockstore: has %s: %w", h, err)
	}
	return true, nil
}

// Get returns the block of hash h after checking that its bytes hash to h:
// ErrNotFound if it is not here, ErrCorrupt if it is damaged.
func (l *Local) Get(h Hash) ([]byte, error) {
	data, err := l.db.Get(blockKey(h))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("%w: %s", ErrNotFound, h)
	case err != nil:
		return nil, fmt.Errorf("blockstore: get %s: %w", h, err)
	}
	if got := Sum(data); got != h {
		return nil, fmt.Errorf("%w: %s holds %d bytes hashing to %s", ErrCorrupt, h, len(data), got)
	}
	return data, nil
}

// Delete removes the block of hash h, if it is here.
func (l *Local) Delete(h Hash) error {
	mu := l.lock(h)
	mu.Lock()
	defer mu.Unlock()
	size, err := l.db.Size(blockKey(h))
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("blockstore: delete %s: %w", h, err)
	}
	if err := l.db.Update(func(w store.Writer) error { return w.Delete(blockKey(h)) }); err != nil {
		return fmt.Errorf("blockstore: delete %s: %w", h, err)
	}
	l.blocks.Add(-1)
	l.stored.Add(-size)
	return nil
}

// Sync makes every block put so far durable.
func (l *Local) Sync() error { return l.db.Sync() }

// Stats describes a node's blocks.
type Stats struct {
	// Blocks and StoredBytes are what the store holds.
	Blocks      int64 `json:"blocks"`
	StoredBytes int64 `json:"stored_bytes"`
	// WrittenBytes counts the bytes given to the store since the process
	// started, whether or not they were already there, and NewBytes those
	// that were not.
	WrittenBytes int64 `json:"written_bytes"`
	NewBytes     int64 `json:"new_bytes"`
	// DedupRatio is WrittenBytes / NewBytes: how many bytes were written
	// for each byte stored anew since the start (0 while none was new).
	DedupRatio float64 `json:"dedup_ratio"`
}

// Stats returns the store's counts.
func (l *Local) Stats() Stats {
	return NewStats(l.blocks.Load(), l.stored.Load(), l.written.Load(), l.added.Load())
}

// NewStats returns the Stats of these counts, with the ratio computed.
func NewStats(blocks, stored, written, added int64) Stats {
	st := Stats{Blocks: blocks, StoredBytes: stored, WrittenBytes: written, NewBytes: added}
	if added > 0 {
		st.DedupRatio = float64(written) / float64(added)
	}
	return st
}
