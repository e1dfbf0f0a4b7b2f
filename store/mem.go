package store

import (
	"bytes"
	"sort"
	"sync"
)

// Mem is an in-memory twin of badgerdb.DB with the same contract, for tests of the
// packages built on the store. It keeps what a write changed until the
// next Sync, so that Crash can lose every write not synced since, as a
// power cut loses the page cache: a test of durability then fails where a
// sync is missing. Nothing it holds survives the process.
type Mem struct {
	mu     sync.RWMutex
	kv     map[string][]byte
	closed bool
	// undo holds, for every key written since the last Sync, its value
	// before (nil: it did not exist).
	undo map[string][]byte
}

// NewMem returns an empty in-memory store.
func NewMem() *Mem { return &Mem{kv: map[string][]byte{}, undo: map[string][]byte{}} }

// Get returns a copy of the value stored under key, or ErrNotFound.
func (m *Mem) Get(key []byte) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	v, ok := m.kv[string(key)]
	if !ok {
		return nil, ErrNotFound
	}
	return bytes.Clone(v), nil
}

// memBatch collects the writes of one update; a nil value is a delete.
type memBatch struct {
	keys []string
	vals [][]byte
}

func (b *memBatch) Set(key, val []byte) error {
	v := bytes.Clone(val)
	if v == nil {
		v = []byte{} // nil marks a delete
	}
	b.keys, b.vals = append(b.keys, string(key)), append(b.vals, v)
	return nil
}

func (b *memBatch) Delete(key []byte) error {
	b.keys, b.vals = append(b.keys, string(key)), append(b.vals, nil)
	return nil
}

// Update applies the writes fn makes atomically: all of them, or none if fn
// fails.
func (m *Mem) Update(fn func(w Writer) error) error {
	var b memBatch
	if err := fn(&b); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for i, k := range b.keys {
		if _, noted := m.undo[k]; !noted {
			m.undo[k] = m.kv[k]
		}
		if b.vals[i] == nil {
			delete(m.kv, k)
		} else {
			m.kv[k] = b.vals[i]
		}
	}
	return nil
}

// Scan calls fn for every key with the given prefix, in ascending key order,
// until fn returns an error, which Scan then returns. It works on a snapshot
// of the matching keys, so fn may write to the store.
func (m *Mem) Scan(prefix []byte, fn func(key, val []byte) error) error {
	return m.ScanFrom(prefix, prefix, fn)
}

// ScanFrom is Scan, starting at the first key at or after from.
func (m *Mem) ScanFrom(prefix, from []byte, fn func(key, val []byte) error) error {
	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		return ErrClosed
	}
	var keys []string
	for k := range m.kv {
		if bytes.HasPrefix([]byte(k), prefix) && k >= string(from) {
			keys = append(keys, k)
		}
	}
	vals := make(map[string][]byte, len(keys))
	for _, k := range keys {
		vals[k] = m.kv[k]
	}
	m.mu.RUnlock()
	sort.Strings(keys)
	// One buffer for every key and value, as Badger's iterator reuses its
	// own: a caller that keeps them past fn breaks here as it would there.
	var kbuf, vbuf []byte
	for _, k := range keys {
		kbuf, vbuf = append(kbuf[:0], k...), append(vbuf[:0], vals[k]...)
		if err := fn(kbuf, vbuf); err != nil {
			return err
		}
	}
	return nil
}

// Size returns the size of the value stored under key, or ErrNotFound.
func (m *Mem) Size(key []byte) (int64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return 0, ErrClosed
	}
	v, ok := m.kv[string(key)]
	if !ok {
		return 0, ErrNotFound
	}
	return int64(len(v)), nil
}

// ScanSizes calls fn for every key with the given prefix, in ascending key
// order, with the size of its value, until fn returns an error, which
// ScanSizes then returns.
func (m *Mem) ScanSizes(prefix []byte, fn func(key []byte, size int64) error) error {
	return m.Scan(prefix, func(key, val []byte) error { return fn(key, int64(len(val))) })
}

// Sync makes every write made so far durable: Crash keeps it.
func (m *Mem) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	clear(m.undo)
	return nil
}

// Crash loses every write made since the last Sync, as a power cut loses
// what the page cache held. The store stays open, as a disk does for the
// process that starts after the cut.
func (m *Mem) Crash() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, v := range m.undo {
		if v == nil {
			delete(m.kv, k)
		} else {
			m.kv[k] = v
		}
	}
	clear(m.undo)
}

// Close empties the store. Later calls to any method return ErrClosed.
func (m *Mem) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed, m.kv = true, nil
	return nil
}
