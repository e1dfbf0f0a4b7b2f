package txlog

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/difuse/difuse/store"
)

// Retention says what compaction keeps of a log: every entry younger than
// For, and, of each record, the entries of its Keep latest committed
// versions (at least its latest). A compacted entry's write ID is
// forgotten with it, so For must be longer than any client goes on
// retrying a write.
type Retention struct {
	Keep int
	For  time.Duration
}

// DefaultRetention keeps a record's last 8 versions and an hour of
// everything.
var DefaultRetention = Retention{Keep: 8, For: time.Hour}

// CompactStats says what a compaction did.
type CompactStats struct {
	// Partitions is how many replicas were examined, Compacted how many
	// moved their base, Dropped how many entries went.
	Partitions, Compacted, Dropped int
}

// compactChunk bounds the entries one step of compaction examines while it
// holds a partition's lock.
const compactChunk = 1024

// Compact folds the old history of every partition this host replicates
// into the snapshot its records already are. Per replica, the base moves
// up to the last committed and applied entry older than r.For (a write's
// entry by when this replica learned it, on this host's clock; another by
// its leader's clock, see young); entries up to the base are deleted
// unless they hold one
// of a record's r.Keep latest committed versions; the entries above the
// base stay whole, so the log still verifies as a hash chain from the
// base's hash, and each record's chain from its oldest kept version. A
// replica that needs entries below a base gets the snapshot instead
// (HandleSnapshot).
func (s *Service) Compact(ctx context.Context, r Retention) (CompactStats, error) {
	r.Keep = max(r.Keep, 1)
	var names []string
	if err := s.Partitions(func(h Held) error { names = append(names, h.Name); return nil }); err != nil {
		return CompactStats{}, err
	}
	var st CompactStats
	cutoff := s.cfg.Clock().Add(-r.For).UnixNano()
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		p, err := s.ps.get(name)
		if err != nil {
			return st, err
		}
		st.Partitions++
		moved := false
		for first := true; ; first = false {
			n, more, err := s.ps.compact(p, r.Keep, cutoff, first)
			if err != nil {
				return st, err
			}
			st.Dropped += n
			moved = moved || more || n > 0
			if !more {
				break
			}
		}
		if moved {
			st.Compacted++
		}
	}
	return st, nil
}

// compact takes one step of p's compaction: it moves the base over at most
// compactChunk entries older than cutoff, and deletes those (with the
// entries kept below the old base, on the first step) that no record's
// keep latest versions need. On the first step it also drops the
// before-images of committed entries. It reports how many entries it
// deleted and whether the base moved.
func (ps *parts) compact(p *part, keep int, cutoff int64, first bool) (int, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ps.closed.Load() {
		return 0, false, errClosed
	}
	limit := min(p.commit, p.applied, p.base+compactChunk)
	old, base := p.base, p.base
	var txs []*Tx
	for h := p.base + 1; h <= limit; h++ {
		t, err := ps.entry(p, h)
		if err != nil {
			return 0, false, err
		}
		young, err := ps.young(p, t, cutoff)
		if err != nil {
			return 0, false, err
		}
		if young {
			break
		}
		base, txs = h, append(txs, t)
	}
	if first {
		if err := ps.dropBeforeImages(p); err != nil {
			return 0, false, err
		}
	}
	if base == old {
		// A log with nothing old enough is left alone: its kept
		// entries are looked at again once its base moves.
		return 0, false, nil
	}
	if first {
		// Entries kept below the base for their records' history may
		// have newer versions by now.
		var kept []*Tx
		err := ps.db.Scan(p.logPrefix(), func(k, v []byte) error {
			if binary.BigEndian.Uint64(k[len(k)-8:]) > old {
				return errStopScan
			}
			t, err := DecodeTx(v)
			if err != nil {
				return err
			}
			kept = append(kept, t)
			return nil
		})
		if err != nil && !errors.Is(err, errStopScan) {
			return 0, false, fmt.Errorf("txlog: %q: list kept entries: %w", p.name, err)
		}
		txs = append(kept, txs...)
	}
	type kept struct{ from, atBase uint64 }
	keepFrom := map[string]kept{}
	var drop []*Tx
	for _, t := range txs {
		needed := false
		for _, op := range t.Ops {
			if op.Kind != OpSet && op.Kind != OpDelete {
				continue
			}
			k, ok := keepFrom[op.Name]
			if !ok {
				var err error
				if k.from, k.atBase, err = ps.keepFrom(p, op.Name, keep, base); err != nil {
					return 0, false, err
				}
				keepFrom[op.Name] = k
			}
			needed = needed || t.Height >= k.from || t.Height == k.atBase
		}
		if !needed {
			drop = append(drop, t)
		}
	}
	// A record changed above the old base no longer needs the state a
	// snapshot installed for it: its version at the new base has an entry.
	var obsolete [][]byte
	looked := map[string]bool{}
	for _, t := range txs {
		for _, op := range t.Ops {
			if t.Height <= old || (op.Kind != OpSet && op.Kind != OpDelete) || looked[op.Name] {
				continue
			}
			looked[op.Name] = true
			k := p.installedKey(op.Name)
			if _, err := ps.db.Get(k); err == nil {
				obsolete = append(obsolete, k)
			}
		}
	}
	m := p.metaLocked()
	top := txs[len(txs)-1]
	cfg, at, err := ps.configBefore(p, base+1)
	if err != nil {
		return 0, false, err
	}
	m.Base, m.BaseHash, m.BaseBal, m.BaseConfig, m.BaseConfigAt = base, top.Hash(), top.Ballot, cfg, at
	// The new base goes first: a crash after it leaves entries that the
	// next compaction deletes, never a gap above the base.
	for i := 0; i == 0 || i < len(drop); i += dropBatch {
		batch := drop[i:min(i+dropBatch, len(drop))]
		err := ps.db.Update(func(w store.Writer) error {
			if i == 0 {
				if err := w.Set(p.metaKey(), encodeMeta(m)); err != nil {
					return err
				}
				for _, k := range obsolete {
					if err := w.Delete(k); err != nil {
						return err
					}
				}
			}
			for _, t := range batch {
				if err := w.Delete(p.logKey(t.Height)); err != nil {
					return err
				}
				if !t.ID.IsZero() {
					if err := w.Delete(p.idKey(t.ID)); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return 0, false, fmt.Errorf("txlog: %q: compact: %w", p.name, err)
		}
		if i == 0 {
			p.base, p.baseHash, p.baseBal, p.baseConfig, p.baseConfigAt = m.Base, m.BaseHash, m.BaseBal, m.BaseConfig, m.BaseConfigAt
		}
	}
	return len(drop), true, nil
}

// young reports whether entry t is younger than cutoff: a write's entry by
// when this replica learned it (its own clock: a skewed leader must not
// get a write's ID forgotten early, which would let a retry apply it
// twice), another by the time its leader gave it, which decides only how
// much history is kept. p.mu must be held.
func (ps *parts) young(p *part, t *Tx, cutoff int64) (bool, error) {
	if !t.ID.IsZero() {
		h, learned, found, err := ps.indexed(p, t.ID)
		if err != nil {
			return false, err
		}
		if found && h == t.Height && learned != 0 {
			return learned >= cutoff, nil
		}
	}
	return t.Time >= cutoff, nil
}

// dropBeforeImages deletes the before-images of committed entries, which
// are never cut from the log. p.mu must be held.
func (ps *parts) dropBeforeImages(p *part) error {
	var keys [][]byte
	err := ps.db.Scan(p.beforePrefix(), func(k, _ []byte) error {
		if binary.BigEndian.Uint64(k[len(k)-8:]) > p.commit {
			return errStopScan
		}
		keys = append(keys, append([]byte(nil), k...))
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return fmt.Errorf("txlog: %q: list before-images: %w", p.name, err)
	}
	for i := 0; i < len(keys); i += dropBatch {
		err := ps.db.Update(func(w store.Writer) error {
			for _, k := range keys[i:min(i+dropBatch, len(keys))] {
				if err := w.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("txlog: %q: drop before-images: %w", p.name, err)
		}
	}
	return nil
}

// keepFrom returns the height of the oldest of record name's keep latest
// committed versions (0: it has fewer, keep them all): entries from there
// on that change the record are its history to keep. It also returns the
// height of the record's latest version at or below base (0: none, or the
// record's current version is there), whose entry a snapshot at the base
// needs to know the record's state there (see HandleSnapshot). p.mu must
// be held.
func (ps *parts) keepFrom(p *part, name string, keep int, base uint64) (from, atBase uint64, err error) {
	r, err := ps.record(p, name)
	if err != nil {
		return 0, 0, err
	}
	n := 0
	for h := r.Height; h != 0; {
		if h <= base && atBase == 0 && r.Height > base {
			atBase = h
		}
		if h <= p.commit && from == 0 {
			if n++; n == keep {
				from = h
			}
		}
		if from != 0 && (atBase != 0 || r.Height <= base) {
			return from, atBase, nil
		}
		t, err := ps.entry(p, h)
		if errors.Is(err, store.ErrNotFound) && h <= p.base {
			// Older versions are gone already.
			return cmp.Or(from, h), atBase, nil
		}
		if err != nil {
			return 0, 0, err
		}
		op, ok := t.lastOp(name)
		if !ok || op.Prev.IsZero() || op.PrevHeight >= h {
			return from, atBase, nil
		}
		h = op.PrevHeight
	}
	return from, atBase, nil
}

// SnapshotPage is a page of a replica's records as they were at a
// committed height, with what a replica installing them needs to go on
// from there: the hash and ballot of the entry at that height, and the
// replica set in force.
type SnapshotPage struct {
	Height   uint64
	Hash     Hash
	Ballot   Ballot
	Config   []string
	ConfigAt uint64
	// Records are the records (deleted ones included) whose names sort
	// after the page's After, in name order; More says that more follow.
	Records []Record
	More    bool
}

// Bounds on one snapshot page, as for an Append.
const (
	snapshotRecords = 1024
	snapshotBytes   = 4 << 20
)

// HandleSnapshot returns a page of this replica's records as they were at
// height (0: its base), those whose names sort after after. The height
// must be committed here and not below the base. A replica that installs
// a snapshot installs it at the base, and gets the entries above it as
// entries, with their write IDs: the base covers only entries older than
// the retention, so every write younger than that is known to it (see
// written), and a retried write is not applied twice. Compaction keeps,
// for that, the entry of each record's version at the base.
func (s *Service) HandleSnapshot(partition string, height uint64, after string) (SnapshotPage, error) {
	p, err := s.ps.find(partition)
	if err != nil {
		return SnapshotPage{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	top := min(p.commit, p.applied)
	if height == 0 {
		height = p.base
	}
	if height == 0 || height > top || height < p.base {
		return SnapshotPage{}, fmt.Errorf("%w: %q: no snapshot at %d here (base %d, committed %d)", ErrUnavailable, p.name, height, p.base, top)
	}
	pg := SnapshotPage{Height: height, Config: p.config, ConfigAt: p.configAt}
	if pg.Hash, err = s.ps.hashAtLocked(p, height); err != nil {
		return SnapshotPage{}, err
	}
	switch height {
	case p.base:
		pg.Ballot = p.baseBal
	default:
		t, err := s.ps.entry(p, height)
		if err != nil {
			return SnapshotPage{}, err
		}
		pg.Ballot = t.Ballot
	}
	if p.configAt > height {
		if pg.Config, pg.ConfigAt, err = s.ps.configBefore(p, height+1); err != nil {
			return SnapshotPage{}, err
		}
	}
	skip, size := len(p.recPrefix()), 0
	err = s.ps.db.ScanFrom(p.recPrefix(), p.recsAfter(after), func(k, _ []byte) error {
		if len(pg.Records) == snapshotRecords || size >= snapshotBytes {
			pg.More = true
			return errStopScan
		}
		r, err := s.ps.recordAt(p, string(k[skip:]), height)
		if err != nil {
			return err
		}
		if r.Height != 0 {
			pg.Records = append(pg.Records, r)
			size += len(r.Name) + len(r.Value)
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return SnapshotPage{}, fmt.Errorf("txlog: %q: snapshot: %w", p.name, err)
	}
	return pg, nil
}

// installFrom replaces this host's replica p with the snapshot of the
// replica at from, at height (0: whatever from has committed), unless p
// has committed as far already, or holds the snapshot's entry in its log;
// ok, called with p.mu held just before, may refuse. It returns p's commit
// height after.
func (s *Service) installFrom(ctx context.Context, p *part, from string, height uint64, ok func() error) (uint64, error) {
	p.install.Lock()
	defer p.install.Unlock()
	var first SnapshotPage
	var recs []Record
	seen := false
	for after := ""; ; {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
		pg, err := s.tr.Snapshot(cctx, from, p.name, height, after)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("txlog: %q: snapshot from %s: %w", p.name, from, err)
		}
		if height == 0 {
			height = pg.Height
		} else if pg.Height != height {
			return 0, fmt.Errorf("%w: %q: a snapshot page from %s at height %d, not %d", ErrBadRequest, p.name, from, pg.Height, height)
		}
		if after == "" {
			first = pg
		}
		for _, r := range pg.Records {
			if err := checkName("record", r.Name, true); err != nil {
				return 0, err
			}
			if seen && r.Name <= after || r.Height == 0 || r.Height > height {
				return 0, fmt.Errorf("%w: %q: snapshot record %q from %s out of place", ErrBadRequest, p.name, r.Name, from)
			}
			after, seen = r.Name, true
		}
		recs = append(recs, pg.Records...)
		if !pg.More {
			break
		}
		if len(pg.Records) == 0 {
			return 0, fmt.Errorf("%w: %q: an empty snapshot page from %s with more to follow", ErrBadRequest, p.name, from)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := ok(); err != nil {
		return 0, err
	}
	if p.commit >= height {
		return p.commit, nil
	}
	if h, err := s.ps.hashAtLocked(p, height); err == nil && h == first.Hash && height <= p.last {
		// The log has the snapshot's entry, and so everything before it
		// (the entries it acknowledged since may be counted toward a
		// commit, so they stay): it is committed up to there.
		if err := s.ps.write(p, p.last+1, nil, p.promised, height, height, true); err != nil {
			return 0, err
		}
		return p.commit, nil
	}
	if err := s.ps.install(p, first, recs); err != nil {
		return 0, fmt.Errorf("txlog: %q: install the snapshot from %s: %w", p.name, from, err)
	}
	s.log.Info("installed a snapshot", "partition", p.name, "from", from, "height", height, "records", len(recs))
	return p.commit, nil
}

// install replaces p's replica with a snapshot: the records recs at
// pg.Height, which becomes the base, the head and the commit point. It
// marks the install in the metadata first, so that a crash part way
// leaves a replica that is cleared when next loaded. p.mu must be held.
func (ps *parts) install(p *part, pg SnapshotPage, recs []Record) error {
	if ps.closed.Load() {
		return errClosed
	}
	m := p.metaLocked()
	m.Installing = true
	if err := ps.db.Update(func(w store.Writer) error { return w.Set(p.metaKey(), encodeMeta(m)) }); err != nil {
		return err
	}
	if err := ps.clear(p, true); err != nil {
		return err
	}
	for i := 0; i < len(recs); i += dropBatch {
		batch := recs[i:min(i+dropBatch, len(recs))]
		err := ps.db.Update(func(w store.Writer) error {
			for _, r := range batch {
				if r.Height == 0 {
					continue
				}
				if err := w.Set(p.installedKey(r.Name), encodeRecord(r)); err != nil {
					return err
				}
			}
			return putRecords(w, p, batch)
		})
		if err != nil {
			return err
		}
	}
	m = meta{Promised: p.promised, Last: pg.Height, LastHash: pg.Hash, LastBal: pg.Ballot, Commit: pg.Height, Applied: pg.Height,
		Config: slices.Clone(pg.Config), ConfigAt: pg.ConfigAt,
		Base: pg.Height, BaseHash: pg.Hash, BaseBal: pg.Ballot, BaseConfig: slices.Clone(pg.Config), BaseConfigAt: pg.ConfigAt}
	if err := ps.db.Update(func(w store.Writer) error { return w.Set(p.metaKey(), encodeMeta(m)) }); err != nil {
		return err
	}
	if err := ps.db.Sync(); err != nil {
		return err
	}
	p.last, p.lastHash, p.lastBal, p.commit, p.applied, p.durable = m.Last, m.LastHash, m.LastBal, m.Commit, m.Applied, m.Last
	p.config, p.configAt = m.Config, m.ConfigAt
	p.base, p.baseHash, p.baseBal, p.baseConfig, p.baseConfigAt = m.Base, m.BaseHash, m.BaseBal, m.BaseConfig, m.BaseConfigAt
	return nil
}
