package inode

import (
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/difuse/difuse/txlog"
)

// known keeps the records this FS last read or wrote, with their hashes,
// so that a change can start from them without reading first. A change
// made on a stale one fails its condition (IfMatch) at the leader, which
// drops it here, and the retry reads; nothing is ever answered from it.
type known struct {
	c *lru.Cache[recordKey, version]
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

// maxKnown bounds how many records an FS keeps: entries and inodes of a
// few directories' worth of recent changes, a few MiB.
const maxKnown = 1 << 15

func newKnown() known {
	c, _ := lru.New[recordKey, version](maxKnown) // fails only for a size below 1
	return known{c}
}

// note keeps a record's value and hash as just read or written.
func (k known) note(part uint64, name string, value []byte, hash txlog.Hash) {
	k.c.Add(recordKey{part, name}, version{value, hash})
}

// forget drops a record: it is gone, or its state is not known.
func (k known) forget(part uint64, name string) { k.c.Remove(recordKey{part, name}) }

// get returns a record as last seen, if kept.
func (k known) get(part uint64, name string) (version, bool) {
	return k.c.Get(recordKey{part, name})
}

// wrote updates the records a write changed: kept with the write's hash
// if it committed, dropped if it failed (its outcome may be unknown).
func (k known) wrote(part uint64, changes []txlog.Change, hash txlog.Hash, err error) {
	for _, c := range changes {
		switch {
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
