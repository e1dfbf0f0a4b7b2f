package txlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/difuse/difuse/internal/codec"
	"github.com/difuse/difuse/store"
)

// kv is the part of the local store the transaction log uses.
type kv interface {
	Get(key []byte) ([]byte, error)
	Update(fn func(w store.Writer) error) error
	Scan(prefix []byte, fn func(key, val []byte) error) error
	ScanFrom(prefix, from []byte, fn func(key, val []byte) error) error
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
	// seen is the highest ballot other replicas said they promised (a
	// refusal tells), for a takeover to go above. It is no promise of
	// this host's: recording it as one would make this host refuse the
	// leader that holds it, and that leader raise its ballot again.
	seen     Ballot
	last     uint64 // height of the last log entry
	lastHash Hash
	lastBal  Ballot // ballot of the last log entry
	commit   uint64 // highest height known committed
	applied  uint64 // records reflect the log up to here
	// durable is the height up to which this host's log is known to be
	// on disk: a leader counts itself towards a commit only up to it.
	durable uint64
	// config is the replica set in force: the one the latest OpConfig in
	// the log sets (nil if the log has none yet), written at configAt.
	config   []string
	configAt uint64
	// base is the height the log was compacted up to: entries up to it may
	// be gone (some kept for their records' history), every entry above it
	// is there. baseHash and baseBal are those of the entry at base, and
	// baseConfig the replica set in force there, set at baseConfigAt.
	base         uint64
	baseHash     Hash
	baseBal      Ballot
	baseConfig   []string
	baseConfigAt uint64
	// install serialises snapshot installs on this replica.
	install sync.Mutex
	// Leader state, valid while leading is not zero.
	leading Ballot
	match   map[string]uint64 // follower → height up to which its log matches ours
	// joint is the replica set being left while a change of set commits:
	// until it does, commits need a majority of it too.
	joint []string
	// creators: the leader is creating the partition, and commits need
	// every one of these members of the set (see Service.quorumFor).
	creators []string
	// syncLogged is when a sync last logged that members are behind (by
	// the real clock): at most once a minute.
	syncLogged time.Time
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
	// The compacted base (see part.base).
	Base         uint64
	BaseHash     Hash
	BaseBal      Ballot
	BaseConfig   []string
	BaseConfigAt uint64
	// Installing marks a snapshot install under way: if the host stops
	// before it ends, the replica's partial records are cleared on load.
	Installing bool
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
	b = appendConf(b, m.Config)
	// Fields added with compaction; metadata written before ends here.
	b = binary.BigEndian.AppendUint64(b, m.Base)
	b = append(b, m.BaseHash[:]...)
	b = binary.BigEndian.AppendUint64(b, m.BaseBal.N)
	b = codec.AppendString(b, m.BaseBal.Host)
	b = binary.BigEndian.AppendUint64(b, m.BaseConfigAt)
	b = appendConf(b, m.BaseConfig)
	if m.Installing {
		return append(b, 1)
	}
	return append(b, 0)
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
	if d.Err() == nil && d.Left() > 0 {
		m.Base = d.Uint64()
		readHash(d, &m.BaseHash)
		m.BaseBal.N = d.Uint64()
		m.BaseBal.Host = d.String()
		m.BaseConfigAt = d.Uint64()
		m.BaseConfig = readConf(d)
		m.Installing = d.Byte() == 1
	}
	return m, d.Finish()
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

// idKey indexes the height of the transaction a write with that ID made,
// and when this replica learned it, by its own clock (see idValue).
// An entry cut from the log leaves its key behind; readers check the ID of
// the entry the key names.
func (p *part) idKey(id WriteID) []byte { return append(append([]byte("t/i/"), p.key...), id[:]...) }

func (p *part) idPrefix() []byte { return append([]byte("t/i/"), p.key...) }

// beforeKey holds the before-image of the entry at height h, kept while
// it is applied but not committed.
func (p *part) beforeKey(h uint64) []byte {
	return binary.BigEndian.AppendUint64(p.beforePrefix(), h)
}

func (p *part) beforePrefix() []byte { return append([]byte("t/u/"), p.key...) }

func (p *part) recKey(name string) []byte { return append(append([]byte("t/r/"), p.key...), name...) }

func (p *part) recPrefix() []byte { return append([]byte("t/r/"), p.key...) }

// installedKey holds a record's state as a snapshot installed it: the
// replica has no entry of that version, so it is kept until the base
// moves past a later version of the record (see parts.before).
func (p *part) installedKey(name string) []byte { return append(p.installedPrefix(), name...) }

func (p *part) installedPrefix() []byte { return append([]byte("t/s/"), p.key...) }

// parts holds the partitions this host has touched, loading each from the
// store on first use.
type parts struct {
	db     kv
	mu     sync.Mutex
	m      map[string]*part
	closed atomic.Bool
	// now is this host's clock, which the index of writes notes when this
	// replica learned each write by.
	now func() time.Time
}

// errClosed is returned by every operation after Close.
var errClosed = fmt.Errorf("%w: service closed", ErrUnavailable)

// get returns the state of partition name, loading it on first use. A
// malformed name, which only a peer's bad message carries, is refused.
func (ps *parts) get(name string) (*part, error) {
	return ps.load(name, true)
}

// find returns the partition if this host holds anything of it (in memory
// or in its store), else ErrNoPartition; it creates nothing, so a request
// for a partition that does not exist costs no memory.
func (ps *parts) find(name string) (*part, error) {
	p, err := ps.load(name, false)
	if err == nil && p == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoPartition, name)
	}
	return p, err
}

// load returns the partition as held in memory, else as stored, else a new
// one if create is set, else nil.
func (ps *parts) load(name string, create bool) (*part, error) {
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
		if !create {
			return nil, nil
		}
	case err != nil:
		return nil, fmt.Errorf("txlog: load partition %q: %w", name, err)
	default:
		m, err := decodeMeta(b)
		if err != nil {
			return nil, fmt.Errorf("txlog: partition %q: bad metadata: %w", name, err)
		}
		p.promised, p.last, p.lastHash, p.lastBal, p.commit, p.applied = m.Promised, m.Last, m.LastHash, m.LastBal, m.Commit, m.Applied
		p.durable = p.last // as read from disk
		p.config, p.configAt = m.Config, m.ConfigAt
		p.base, p.baseHash, p.baseBal, p.baseConfig, p.baseConfigAt = m.Base, m.BaseHash, m.BaseBal, m.BaseConfig, m.BaseConfigAt
		if m.Installing {
			if err := ps.clear(p, false); err != nil {
				return nil, fmt.Errorf("txlog: partition %q: clear an unfinished install: %w", name, err)
			}
		}
	}
	ps.m[name] = p
	return p, nil
}

// baseNow returns p's compacted base.
func (p *part) baseNow() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.base
}

// metaLocked returns the persisted form of p's state. p.mu must be held.
func (p *part) metaLocked() meta {
	return meta{Promised: p.promised, Last: p.last, LastHash: p.lastHash, LastBal: p.lastBal, Commit: p.commit, Applied: p.applied, Config: p.config, ConfigAt: p.configAt,
		Base: p.base, BaseHash: p.baseHash, BaseBal: p.baseBal, BaseConfig: p.baseConfig, BaseConfigAt: p.baseConfigAt}
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
	if h == p.base {
		return p.baseHash, nil
	}
	if h < p.base {
		return Hash{}, fmt.Errorf("%w: %q at height %d, below the base %d", ErrCompacted, p.name, h, p.base)
	}
	t, err := ps.entry(p, h)
	if err != nil {
		return Hash{}, err
	}
	return t.Hash(), nil
}

// idValue encodes an index entry of a write: its entry's height, and when
// this replica learned it.
func idValue(height uint64, learned time.Time) []byte {
	b := binary.BigEndian.AppendUint64(nil, height)
	return binary.BigEndian.AppendUint64(b, uint64(learned.UnixNano()))
}

// indexed reads the index entry of write id: its entry's height and when
// this replica learned it (zero in an entry from before that was kept);
// found is false if there is none.
func (ps *parts) indexed(p *part, id WriteID) (height uint64, learned int64, found bool, err error) {
	b, err := ps.db.Get(p.idKey(id))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return 0, 0, false, nil
	case err != nil:
		return 0, 0, false, fmt.Errorf("txlog: %q: look a write up: %w", p.name, err)
	case len(b) == 8:
		return binary.BigEndian.Uint64(b), 0, true, nil
	case len(b) != 16:
		return 0, 0, false, fmt.Errorf("txlog: %q: bad write index entry", p.name)
	}
	return binary.BigEndian.Uint64(b), int64(binary.BigEndian.Uint64(b[8:])), true, nil
}

// written returns the transaction of p's log that the write with ID id
// made, or nil if the log holds none. p.mu must be held.
func (ps *parts) written(p *part, id WriteID) (*Tx, error) {
	h, _, found, err := ps.indexed(p, id)
	if err != nil || !found {
		return nil, err
	}
	if h == 0 || h > p.last {
		return nil, nil // cut from the log
	}
	t, err := ps.entry(p, h)
	switch {
	case errors.Is(err, store.ErrNotFound) && h <= p.base:
		return nil, nil // compacted
	case err != nil || t.ID != id:
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

// recsAfter returns the key a scan of p's records that sort after the
// name after starts at: all of them if after is empty.
func (p *part) recsAfter(after string) []byte {
	if after == "" {
		return p.recPrefix()
	}
	return append(p.recKey(after), 0)
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
	err := ps.db.ScanFrom(p.recKey(prefix), p.recsAfter(after), func(k, v []byte) error {
		name := string(k[skip:])
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
			puts = append(puts, [2][]byte{p.idKey(t.ID), idValue(h, ps.now())})
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
	var undo []Record
	if truncateFrom != 0 && truncateFrom <= m.Applied {
		// The records reflect entries being cut: put back what they were
		// before them.
		var err error
		if undo, err = ps.undo(p, truncateFrom-1); err != nil {
			return err
		}
		m.Applied = truncateFrom - 1
	}
	// The records follow in the same store transaction, as far as one
	// transaction holds them: one synced write a step, not two.
	fresh := make(map[uint64]*Tx, len(txs))
	for i, t := range txs {
		fresh[from+uint64(i)] = t
	}
	applyFrom, applyNow := m.Applied+1, min(applyTo, m.Last, m.Applied+applyBatch)
	err := ps.db.Update(func(w store.Writer) error {
		if err := putRecords(w, p, undo); err != nil {
			return err
		}
		if applyNow >= applyFrom {
			if err := ps.applyIn(w, p, applyFrom, applyNow, m.Commit, fresh, undo); err != nil {
				return err
			}
			m.Applied = applyNow
		}
		if truncateFrom != 0 {
			for x := newLast + 1; x <= p.last; x++ {
				if err := w.Delete(p.logKey(x)); err != nil {
					return err
				}
			}
			for x := truncateFrom; x <= p.last; x++ {
				if err := w.Delete(p.beforeKey(x)); err != nil {
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
	p.config, p.configAt, p.applied = m.Config, m.ConfigAt, m.Applied
	if truncateFrom != 0 {
		p.durable = min(p.durable, truncateFrom-1)
	}
	if err := ps.apply(p, min(applyTo, p.last)); err != nil { // what one transaction did not hold
		return err
	}
	if sync {
		if err := ps.db.Sync(); err != nil {
			return fmt.Errorf("txlog: %q: sync: %w", p.name, err)
		}
		p.durable = p.last
	}
	return nil
}

// syncTo makes this host's log durable up to t, unless it is already,
// and records it. A t no longer in the log at its height is an error.
func (ps *parts) syncTo(p *part, t *Tx) error {
	p.mu.Lock()
	done := p.durable >= t.Height
	p.mu.Unlock()
	if done {
		return nil
	}
	if err := ps.db.Sync(); err != nil {
		return fmt.Errorf("txlog: %q: sync: %w", p.name, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// The sync covers what was written before it began: t, if it is still
	// where it was put.
	if h, err := ps.hashAtLocked(p, t.Height); err != nil || h != t.Hash() {
		return fmt.Errorf("txlog: %q: entry %d replaced before it was synced", p.name, t.Height)
	}
	p.durable = max(p.durable, t.Height)
	return nil
}

// applyBatch bounds the entries one store transaction applies.
const applyBatch = 64

// syncHeight makes this host's log durable up to height h (its log's
// head, if shorter), unless it is already, and records it.
func (ps *parts) syncHeight(p *part, h uint64) error {
	p.mu.Lock()
	done := p.durable >= min(h, p.last)
	p.mu.Unlock()
	if done {
		return nil
	}
	if err := ps.db.Sync(); err != nil {
		return fmt.Errorf("txlog: %q: sync: %w", p.name, err)
	}
	p.mu.Lock()
	p.durable = max(p.durable, min(h, p.last))
	p.mu.Unlock()
	return nil
}

// apply brings the records up to height to, applyBatch entries a store
// transaction. p.mu must be held.
func (ps *parts) apply(p *part, to uint64) error {
	if ps.closed.Load() {
		return errClosed
	}
	for p.applied < to {
		upto := min(to, p.applied+applyBatch)
		m := p.metaLocked()
		m.Applied = upto
		err := ps.db.Update(func(w store.Writer) error {
			if err := ps.applyIn(w, p, p.applied+1, upto, p.commit, nil, nil); err != nil {
				return err
			}
			return w.Set(p.metaKey(), encodeMeta(m))
		})
		if err != nil {
			return fmt.Errorf("txlog: %q: apply up to %d: %w", p.name, upto, err)
		}
		p.applied = upto
	}
	return nil
}

// applyIn writes through w the records of the entries from height from to
// height to (those in fresh from there, the others from the log), each
// over the records as the entries before it left them; an entry above
// commit, which may yet be cut from the log, first keeps its
// before-image. written holds records w already rewrote. p.mu must be
// held.
func (ps *parts) applyIn(w store.Writer, p *part, from, to, commit uint64, fresh map[uint64]*Tx, written []Record) error {
	changed := map[string]Record{}
	for _, r := range written {
		changed[r.Name] = r
	}
	current := func(name string) (Record, error) {
		if r, ok := changed[name]; ok {
			return r, nil
		}
		return ps.record(p, name)
	}
	for h := from; h <= to; h++ {
		t, ok := fresh[h]
		if !ok {
			var err error
			if t, err = ps.entry(p, h); err != nil {
				return err
			}
		}
		hash := t.Hash()
		if h > commit {
			// Not committed: it may be cut from the log, and then its
			// records go back to what they were before it.
			before, err := beforeImage(t, current)
			if err != nil {
				return err
			}
			if err := w.Set(p.beforeKey(h), before); err != nil {
				return err
			}
		}
		for _, op := range t.Ops {
			var r Record
			switch op.Kind {
			case OpSet:
				r = Record{Name: op.Name, Exists: true, Value: op.Value, Hash: hash, Height: h}
			case OpDelete:
				r = Record{Name: op.Name, Hash: hash, Height: h}
			default:
				continue
			}
			if err := w.Set(p.recKey(op.Name), encodeRecord(r)); err != nil {
				return err
			}
			changed[op.Name] = r
		}
	}
	return nil
}

// undo returns the records that entries above height to changed, as
// they were at to, for the records to go back there: a record that did not
// exist yet comes back with a zero Height, to be deleted. p.mu must be held.
func (ps *parts) undo(p *part, to uint64) ([]Record, error) {
	seen := map[string]bool{}
	var out []Record
	for h := p.applied; h > to; h-- {
		t, err := ps.entry(p, h)
		if err != nil {
			return nil, err
		}
		for _, op := range t.Ops {
			if seen[op.Name] || (op.Kind != OpSet && op.Kind != OpDelete) {
				continue
			}
			seen[op.Name] = true
			r, err := ps.recordAt(p, op.Name, to)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// putRecords writes records, deleting those with a zero Height (never
// written).
func putRecords(w store.Writer, p *part, recs []Record) error {
	for _, r := range recs {
		var err error
		if r.Height == 0 {
			err = w.Delete(p.recKey(r.Name))
		} else {
			err = w.Set(p.recKey(r.Name), encodeRecord(r))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// installed returns record name's state as the last snapshot installed
// it. p.mu must be held.
func (ps *parts) installed(p *part, name string) (Record, error) {
	b, err := ps.db.Get(p.installedKey(name))
	if err != nil {
		return Record{}, err
	}
	return decodeRecord(name, b)
}

// beforeImage encodes the records that t changes as they are before it
// applies, as current gives them.
func beforeImage(t *Tx, current func(name string) (Record, error)) ([]byte, error) {
	var b []byte
	seen := map[string]bool{}
	for _, op := range t.Ops {
		if (op.Kind != OpSet && op.Kind != OpDelete) || seen[op.Name] {
			continue
		}
		seen[op.Name] = true
		r, err := current(op.Name)
		if err != nil {
			return nil, err
		}
		b = codec.AppendString(b, op.Name)
		b = codec.AppendString(b, string(encodeRecord(r)))
	}
	return b, nil
}

// before returns record name as it was before the entry at height h
// changed it: from h's before-image if it was applied uncommitted, else
// from the entry of the record's previous version. p.mu must be held.
func (ps *parts) before(p *part, h uint64, name string) (Record, error) {
	if b, err := ps.db.Get(p.beforeKey(h)); err == nil {
		return beforeImaged(p, h, name, b)
	} else if !errors.Is(err, store.ErrNotFound) {
		return Record{}, fmt.Errorf("txlog: %q: before-image at %d: %w", p.name, h, err)
	}
	t, err := ps.entry(p, h)
	if err != nil {
		return Record{}, err
	}
	op, ok := t.lastOp(name)
	if !ok {
		return Record{}, fmt.Errorf("txlog: %q: the entry at %d does not change %q", p.name, h, name)
	}
	if op.Prev.IsZero() {
		return Record{Name: name}, nil
	}
	pt, err := ps.entry(p, op.PrevHeight)
	if errors.Is(err, store.ErrNotFound) && op.PrevHeight <= p.base {
		// A version this replica got from a snapshot, not by its entry.
		if r, ierr := ps.installed(p, name); ierr == nil && r.Height == op.PrevHeight && r.Hash == op.Prev {
			return r, nil
		}
	}
	if err != nil {
		return Record{}, err
	}
	prev, ok := pt.lastOp(name)
	if !ok || pt.Hash() != op.Prev || op.PrevHeight >= h {
		return Record{}, fmt.Errorf("txlog: %q: the chain of %q breaks at height %d", p.name, name, op.PrevHeight)
	}
	r := Record{Name: name, Exists: prev.Kind == OpSet, Hash: op.Prev, Height: op.PrevHeight}
	if r.Exists {
		r.Value = prev.Value
	}
	return r, nil
}

// beforeImaged reads record name from b, the before-image of height h.
func beforeImaged(p *part, h uint64, name string, b []byte) (Record, error) {
	d := codec.NewDecoder(b, errDecode)
	for d.Left() > 0 && d.Err() == nil {
		n, rec := d.String(), d.String()
		if n == name && d.Err() == nil {
			return decodeRecord(name, []byte(rec))
		}
	}
	if err := d.Err(); err != nil {
		return Record{}, fmt.Errorf("txlog: %q: before-image at %d: %w", p.name, h, err)
	}
	return Record{}, fmt.Errorf("txlog: %q: the before-image at %d lacks %q", p.name, h, name)
}

// recordAt returns record name as it was at height to (at most the
// applied height), walking its versions back from its current one; a
// record not written by then has a zero Height. p.mu must be held.
func (ps *parts) recordAt(p *part, name string, to uint64) (Record, error) {
	r, err := ps.record(p, name)
	for err == nil && r.Height > to {
		r, err = ps.before(p, r.Height, name)
	}
	return r, err
}

// clear empties p's replica: its records, index of writes and log go, and
// its metadata keeps only the promised ballot, marked installing if a
// snapshot is to fill the replica. p.mu must be held.
func (ps *parts) clear(p *part, installing bool) error {
	for _, prefix := range [][]byte{p.recPrefix(), p.idPrefix(), p.logPrefix(), p.beforePrefix(), p.installedPrefix()} {
		if err := ps.deleteAll(prefix); err != nil {
			return err
		}
	}
	p.last, p.lastHash, p.lastBal, p.commit, p.applied, p.durable = 0, Hash{}, Ballot{}, 0, 0, 0
	p.config, p.configAt, p.match = nil, 0, nil
	p.base, p.baseHash, p.baseBal, p.baseConfig, p.baseConfigAt = 0, Hash{}, Ballot{}, nil, 0
	m := p.metaLocked()
	m.Installing = installing
	return ps.db.Update(func(w store.Writer) error { return w.Set(p.metaKey(), encodeMeta(m)) })
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
// latest OpConfig below it, or the one in force at the base, or nil.
func (ps *parts) configBefore(p *part, h uint64) ([]string, uint64, error) {
	if h <= p.base+1 {
		return p.baseConfig, p.baseConfigAt, nil
	}
	for x := h - 1; x > p.base; x-- {
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
	return p.baseConfig, p.baseConfigAt, nil
}
