package inode

import (
	"strings"
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/difuse/difuse/txlog"
)

// known keeps the records this FS last read or wrote, with their hashes,
// so that a change can start from them without reading first. A change
// made on a stale one fails its condition (IfMatch) at the leader, which
// drops it here, and the retry reads; nothing is ever answered from it.
// It is bounded by count and by bytes, oldest out first.
type known struct {
	mu    sync.Mutex
	c     *simplelru.LRU[recordKey, version]
	bytes int
}

// recordKey names a record: its partition and its name there.
type recordKey struct {
	part uint64
	name string
}

// version is a record's value as last seen, and the hash it had then.
type version struct {
	value []byte
	hash  txlog.Hash
}

// Bounds of known: records, bytes of their values, and the largest value
// kept (a large file's inode, whose flush costs more than a read anyway).
const (
	maxKnown      = 1 << 15
	maxKnownBytes = 8 << 20
	maxKnownValue = 64 << 10
)

func newKnown() *known {
	k := &known{}
	k.c, _ = simplelru.NewLRU(maxKnown, func(_ recordKey, v version) { k.bytes -= len(v.value) }) // fails only for a size below 1
	return k
}

// note keeps a record's value and hash as just read or written.
func (k *known) note(part uint64, name string, value []byte, hash txlog.Hash) {
	key := recordKey{part, name}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.c.Remove(key)
	if len(value) > maxKnownValue {
		return
	}
	k.c.Add(key, version{value, hash})
	k.bytes += len(value)
	for k.bytes > maxKnownBytes {
		k.c.RemoveOldest()
	}
}

// forget drops a record: it is gone, or its state is not known.
func (k *known) forget(part uint64, name string) {
	k.mu.Lock()
	k.c.Remove(recordKey{part, name})
	k.mu.Unlock()
}

// get returns a record as last seen, if kept.
func (k *known) get(part uint64, name string) (version, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.c.Get(recordKey{part, name})
}

// wrote updates the records a write changed: kept with the write's hash
// if it committed, dropped if it failed (its outcome may be unknown).
func (k *known) wrote(part uint64, changes []txlog.Change, hash txlog.Hash, err error) {
	for _, c := range changes {
		switch {
		case strings.HasPrefix(c.Name, PagePrefix):
			// Pages are kept by version, in the page cache.
		case c.Check && err == nil:
		case err != nil || c.Delete:
			k.forget(part, c.Name)
		default:
			k.note(part, c.Name, c.Value, hash)
		}
	}
}

// knownRecord returns a record of partition part, decoded, from what this
// FS last saw of it, if it kept it and it decodes.
func knownRecord[T any](f *FS, part uint64, name string, decode func([]byte) (T, error)) (T, txlog.Hash, bool) {
	var zero T
	v, ok := f.known.get(part, name)
	if !ok {
		return zero, txlog.Hash{}, false
	}
	t, err := decode(v.value)
	if err != nil {
		f.known.forget(part, name)
		return zero, txlog.Hash{}, false
	}
	return t, v.hash, true
}
