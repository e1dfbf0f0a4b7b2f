package txlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/difuse/difuse/internal/codec"
	"github.com/difuse/difuse/store"
)

// kv is the part of the local store the transaction log uses.
type kv interface {
	Get(key []byte) ([]byte, error)
	Update(fn func(w store.Writer) error) error
	Scan(prefix []byte, fn func(key, val []byte) error) error
	Sync() error
}

// part is this host's replica of one partition. mu guards the fields and is
// held only briefly, never across a call to another host; lead serialises
// the leader's operations, which do call other hosts.
type part struct {
	name string
	key  []byte // length-prefixed name, the store key prefix

	lead sync.Mutex

	mu       sync.Mutex
	promised Ballot // highest ballot promised or accepted
	last     uint64 // height of the last log entry
	lastHash Hash
	lastBal  Ballot // ballot of the last log entry
	commit   uint64 // highest height known committed
	applied  uint64 // records reflect the log up to here
	// config is the replica set in force: the one the latest OpConfig in
	// the log sets (nil if the log has none yet), written at configAt.
	config   []string
	configAt uint64
	// Leader state, valid while leading is not zero.
	leading Ballot
	match   map[string]uint64 // follower → height up to which its log matches ours
	// joint is the replica set being left while a change of set commits:
	// until it does, commits need a majority of it too.
	joint []string
	// creating: the leader is creating the partition, and commits need
	// every member of the set (see Service.quorumFor).
	creating bool
}

// meta is what is persisted of a partition besides its log and records.
type meta struct {
	Promised Ballot
	Last     uint64
	LastHash Hash
	LastBal  Ballot
	Commit   uint64
	Applied  uint64
	Config   []string
	ConfigAt uint64
}

func encodeMeta(m meta) []byte {
	b := binary.BigEndian.AppendUint64(nil, m.Promised.N)
	b = codec.AppendString(b, m.Promised.Host)
	b = binary.BigEndian.AppendUint64(b, m.Last)
	b = append(b, m.LastHash[:]...)
	b = binary.BigEndian.AppendUint64(b, m.LastBal.N)
	b = codec.AppendString(b, m.LastBal.Host)
	b = binary.BigEndian.AppendUint64(b, m.Commit)
	b = binary.BigEndian.AppendUint64(b, m.Applied)
	b = binary.BigEndian.AppendUint64(b, m.ConfigAt)
	return appendConf(b, m.Config)
}

func appendConf(b []byte, conf []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(conf)))
	for _, c := range conf {
		b = codec.AppendString(b, c)
	}
	return b
}

// readConf reads a replica set.
func readConf(d *codec.Decoder) []string {
	n := d.Uvarint()
	if n > uint64(d.Left()) {
		d.Fail("%d replicas", n)
		return nil
	}
	var out []string
	for range n {
		out = append(out, d.String())
	}
	return out
}

func decodeMeta(b []byte) (meta, error) {
	d := codec.NewDecoder(b, errDecode)
	var m meta
	m.Promised.N = d.Uint64()
	m.Promised.Host = d.String()
	m.Last = d.Uint64()
	readHash(d, &m.LastHash)
	m.LastBal.N = d.Uint64()
	m.LastBal.Host = d.String()
	m.Commit = d.Uint64()
	m.Applied = d.Uint64()
	m.ConfigAt = d.Uint64()
	m.Config = readConf(d)
	return m, d.Err()
}

// Record is the current state of one record.
type Record struct {
	Name   string
	Exists bool
	Value  []byte
	// Hash is the transaction that last changed the record (zero if none
	// ever did); it is the record's ETag for compare-and-set.
	Hash Hash
	// Height is that transaction's height in the partition's log.
	Height uint64
}

func encodeRecord(r Record) []byte {
	b := binary.BigEndian.AppendUint64(nil, r.Height)
	b = append(b, r.Hash[:]...)
	if r.Exists {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	return append(b, r.Value...)
}

func decodeRecord(name string, b []byte) (Record, error) {
	if len(b) < 41 {
		return Record{}, fmt.Errorf("txlog: record %q: %d bytes", name, len(b))
	}
	r := Record{Name: name, Height: binary.BigEndian.Uint64(b), Exists: b[40] == 1, Value: b[41:]}
	copy(r.Hash[:], b[8:40])
	return r, nil
}

// Store keys: every partition's keys start with a kind byte and the
// partition's length-prefixed name.
func partKey(name string) []byte { return codec.AppendString(nil, name) }

func (p *part) metaKey() []byte { return append([]byte("t/m/"), p.key...) }

func (p *part) logKey(h uint64) []byte {
	return binary.BigEndian.AppendUint64(p.logPrefix(), h)
}

func (p *part) logPrefix() []byte { return append([]byte("t/l/"), p.key...) }

// idKey indexes the height of the transaction a write with that ID made.
// An entry cut from the log leaves its key behind; readers check the ID of
// the entry the key names.
func (p *part) idKey(id WriteID) []byte { return append(append([]byte("t/i/"), p.key...), id[:]...) }

func (p *part) idPrefix() []byte { return append([]byte("t/i/"), p.key...) }

func (p *part) recKey(name string) []byte { return append(append([]byte("t/r/"), p.key...), name...) }

func (p *part) recPrefix() []byte { return append([]byte("t/r/"), p.key...) }

// parts holds the partitions this host has touched, loading each from the
// store on first use.
type parts struct {
	db     kv
	mu     sync.Mutex
	m      map[string]*part
	closed atomic.Bool
}

// errClosed is returned by every operation after Close.
var errClosed = fmt.Errorf("%w: service closed", ErrUnavailable)

// get returns the state of partition name, loading it on first use. A
// malformed name, which only a peer's bad message carries, is refused.
func (ps *parts) get(name string) (*part, error) {
	if err := checkName("partition", name, false); err != nil {
		return nil, err
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p, ok := ps.m[name]; ok {
		return p, nil
	}
	p := &part{name: name, key: partKey(name)}
	b, err := ps.db.Get(p.metaKey())
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("txlog: load partition %q: %w", name, err)
	default:
		m, err := decodeMeta(b)
		if err != nil {
			return nil, fmt.Errorf("txlog: partition %q: bad metadata: %w", name, err)
		}
		p.promised, p.last, p.lastHash, p.lastBal, p.commit, p.applied = m.Promised, m.Last, m.LastHash, m.LastBal, m.Commit, m.Applied
		p.config, p.configAt = m.Config, m.ConfigAt
	}
	ps.m[name] = p
	return p, nil
}

// metaLocked returns the persisted form of p's state. p.mu must be held.
func (p *part) metaLocked() meta {
	return meta{Promised: p.promised, Last: p.last, LastHash: p.lastHash, LastBal: p.lastBal, Commit: p.commit, Applied: p.applied, Config: p.config, ConfigAt: p.configAt}
}

// entry reads the transaction at height h of p's log.
func (ps *parts) entry(p *part, h uint64) (*Tx, error) {
	b, err := ps.db.Get(p.logKey(h))
	if err != nil {
		return nil, fmt.Errorf("txlog: %q at height %d: %w", p.name, h, err)
	}
	return DecodeTx(b)
}

// Bounds on the entries one Append or Fetch carries: at most batchEntries,
// and no more past the first once they hold batchBytes of values, so a
// message stays within a few MiB whatever the values' sizes.
const (
	batchEntries = 256
	batchBytes   = 4 << 20
)

// batch returns the log's entries from height from up to height to, within
// the batch bounds.
func (ps *parts) batch(p *part, from, to uint64) ([]*Tx, error) {
	var out []*Tx
	size := 0
	for h := from; h <= to && len(out) < batchEntries && size < batchBytes; h++ {
		t, err := ps.entry(p, h)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
		for _, op := range t.Ops {
			size += len(op.Name) + len(op.Value)
		}
	}
	return out, nil
}

// hashAtLocked returns the hash of the entry at height h (zero for h =
// 0). p.mu must be held.
func (ps *parts) hashAtLocked(p *part, h uint64) (Hash, error) {
	if h == 0 {
		return Hash{}, nil
	}
	if h == p.last {
		return p.lastHash, nil
	}
	t, err := ps.entry(p, h)
	if err != nil {
		return Hash{}, err
	}
	return t.Hash(), nil
}

// written returns the transaction of p's log that the write with ID id
// made, or nil if the log holds none. p.mu must be held.
func (ps *parts) written(p *part, id WriteID) (*Tx, error) {
	b, err := ps.db.Get(p.idKey(id))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("txlog: %q: look a write up: %w", p.name, err)
	case len(b) != 8:
		return nil, fmt.Errorf("txlog: %q: bad write index entry", p.name)
	}
	h := binary.BigEndian.Uint64(b)
	if h == 0 || h > p.last {
		return nil, nil // cut from the log
	}
	t, err := ps.entry(p, h)
	if err != nil || t.ID != id {
		return nil, err // replaced by another entry
	}
	return t, nil
}

// record reads a record's current state on this replica.
func (ps *parts) record(p *part, name string) (Record, error) {
	b, err := ps.db.Get(p.recKey(name))
	if errors.Is(err, store.ErrNotFound) {
		return Record{Name: name}, nil
	}
	if err != nil {
		return Record{}, fmt.Errorf("txlog: read %q/%q: %w", p.name, name, err)
	}
	return decodeRecord(name, b)
}

// errStopScan ends a scan early.
var errStopScan = errors.New("stop")

// list returns up to limit existing records of p whose names start with
// prefix and sort after after, in name order, and whether more follow.
// p.mu must be held.
func (ps *parts) list(p *part, prefix, after string, limit int) ([]Record, bool, error) {
	var out []Record
	more := false
	skip := len(p.recPrefix())
	err := ps.db.Scan(p.recKey(prefix), func(k, v []byte) error {
		name := string(k[skip:])
		if after != "" && name <= after {
			return nil
		}
		r, err := decodeRecord(name, v)
		if err != nil || !r.Exists {
			return err
		}
		if len(out) == limit {
			more = true
			return errStopScan
		}
		r.Value = bytes.Clone(r.Value) // v is the scan's, valid only until we return
		out = append(out, r)
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return nil, false, fmt.Errorf("txlog: list %q/%q*: %w", p.name, prefix, err)
	}
	return out, more, nil
}

// write replaces p's log from height from on with txs (which must follow
// each other and the entry at from-1), promises ballot, moves the commit
// point to commit (capped at the new last entry) and applies the log to the
// records up to applyTo (capped likewise). Entries already in the log with
// the same hash are kept. A log cut below what the records reflect makes
// them be rebuilt from the log. It syncs the store when sync is set. p.mu
// must be held.
func (ps *parts) write(p *part, from uint64, txs []*Tx, promised Ballot, commit, applyTo uint64, sync bool) error {
	if ps.closed.Load() {
		return errClosed
	}
	m := p.metaLocked()
	m.Promised = promised
	var puts [][2][]byte
	truncateFrom := uint64(0)
	h := from
	for _, t := range txs {
		hash := t.Hash()
		if h <= m.Last {
			old, err := ps.hashAtLocked(p, h)
			if err == nil && old == hash {
				h++
				continue
			}
			if truncateFrom == 0 {
				truncateFrom = h
			}
		}
		if truncateFrom != 0 && truncateFrom <= m.ConfigAt && m.ConfigAt >= h {
			// The config in force is cut off: fall back to the one before.
			cfg, at, err := ps.configBefore(p, truncateFrom)
			if err != nil {
				return err
			}
			m.Config, m.ConfigAt = cfg, at
		}
		for _, op := range t.Ops {
			if op.Kind == OpConfig {
				m.Config, m.ConfigAt = op.members(), h
			}
		}
		puts = append(puts, [2][]byte{p.logKey(h), t.Encode()})
		if !t.ID.IsZero() {
			puts = append(puts, [2][]byte{p.idKey(t.ID), binary.BigEndian.AppendUint64(nil, h)})
		}
		m.LastHash, m.LastBal = hash, t.Ballot
		h++
	}
	newLast := max(m.Last, h-1)
	if truncateFrom != 0 {
		newLast = h - 1
	}
	if len(puts) > 0 || truncateFrom != 0 {
		m.Last = newLast
	}
	if truncateFrom != 0 && truncateFrom <= m.Commit {
		return fmt.Errorf("txlog: %q: refusing to cut committed entries at %d (commit %d)", p.name, truncateFrom, m.Commit)
	}
	m.Commit = min(max(m.Commit, commit), m.Last)
	rebuild := truncateFrom != 0 && truncateFrom <= m.Applied
	err := ps.db.Update(func(w store.Writer) error {
		if truncateFrom != 0 {
			for x := newLast + 1; x <= p.last; x++ {
				if err := w.Delete(p.logKey(x)); err != nil {
					return err
				}
			}
		}
		for _, kv := range puts {
			if err := w.Set(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return w.Set(p.metaKey(), encodeMeta(m))
	})
	if err != nil {
		return fmt.Errorf("txlog: %q: write log: %w", p.name, err)
	}
	p.promised, p.last, p.lastHash, p.lastBal, p.commit = m.Promised, m.Last, m.LastHash, m.LastBal, m.Commit
	p.config, p.configAt = m.Config, m.ConfigAt
	if rebuild {
		if err := ps.rebuild(p); err != nil {
			return err
		}
	}
	if err := ps.apply(p, min(applyTo, p.last)); err != nil {
		return err
	}
	if sync {
		if err := ps.db.Sync(); err != nil {
			return fmt.Errorf("txlog: %q: sync: %w", p.name, err)
		}
	}
	return nil
}

// apply brings the records up to height to. p.mu must be held.
func (ps *parts) apply(p *part, to uint64) error {
	if ps.closed.Load() {
		return errClosed
	}
	for p.applied < to {
		t, err := ps.entry(p, p.applied+1)
		if err != nil {
			return err
		}
		hash := t.Hash()
		err = ps.db.Update(func(w store.Writer) error {
			for _, op := range t.Ops {
				switch op.Kind {
				case OpSet:
					r := Record{Name: op.Name, Exists: true, Value: op.Value, Hash: hash, Height: t.Height}
					if err := w.Set(p.recKey(op.Name), encodeRecord(r)); err != nil {
						return err
					}
				case OpDelete:
					r := Record{Name: op.Name, Hash: hash, Height: t.Height}
					if err := w.Set(p.recKey(op.Name), encodeRecord(r)); err != nil {
						return err
					}
				}
			}
			m := p.metaLocked()
			m.Applied = t.Height
			return w.Set(p.metaKey(), encodeMeta(m))
		})
		if err != nil {
			return fmt.Errorf("txlog: %q: apply %d: %w", p.name, t.Height, err)
		}
		p.applied = t.Height
	}
	return nil
}

// rebuild clears p's records so that apply replays the log from the start.
// p.mu must be held.
func (ps *parts) rebuild(p *part) error {
	var keys [][]byte
	err := ps.db.Scan(p.recPrefix(), func(k, _ []byte) error {
		keys = append(keys, append([]byte(nil), k...))
		return nil
	})
	if err != nil {
		return err
	}
	p.applied = 0
	return ps.db.Update(func(w store.Writer) error {
		for _, k := range keys {
			if err := w.Delete(k); err != nil {
				return err
			}
		}
		return w.Set(p.metaKey(), encodeMeta(p.metaLocked()))
	})
}

// promise records a higher ballot durably. p.mu must be held.
func (ps *parts) promise(p *part, b Ballot) error {
	if ps.closed.Load() {
		return errClosed
	}
	m := p.metaLocked()
	m.Promised = b
	if err := ps.db.Update(func(w store.Writer) error { return w.Set(p.metaKey(), encodeMeta(m)) }); err != nil {
		return fmt.Errorf("txlog: %q: promise: %w", p.name, err)
	}
	if err := ps.db.Sync(); err != nil {
		return fmt.Errorf("txlog: %q: promise: %w", p.name, err)
	}
	p.promised = b
	if !p.leading.IsZero() && p.leading.Less(b) {
		p.leading = Ballot{} // deposed
	}
	return nil
}

// IsZero reports whether b is the zero ballot.
func (b Ballot) IsZero() bool { return b == Ballot{} }

// configBefore finds the replica set in force just below height h: the
// latest OpConfig below it, or nil.
func (ps *parts) configBefore(p *part, h uint64) ([]string, uint64, error) {
	for x := h - 1; x > 0; x-- {
		t, err := ps.entry(p, x)
		if err != nil {
			return nil, 0, err
		}
		for i := len(t.Ops) - 1; i >= 0; i-- {
			if t.Ops[i].Kind == OpConfig {
				return t.Ops[i].members(), x, nil
			}
		}
	}
	return nil, 0, nil
}
