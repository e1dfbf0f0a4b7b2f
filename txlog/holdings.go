package txlog

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/difuse/difuse/internal/codec"
	"github.com/difuse/difuse/store"
)

// Held describes this host's replica of one partition.
type Held struct {
	Name string
	// Last and LastHash are the head of the replica's log: two replicas
	// with the same head hold the same log, since each entry's hash covers
	// the one before.
	Last     uint64
	LastHash Hash
	Commit   uint64
	// Base is the height the log was compacted up to (0: never).
	Base uint64
	// Config is the replica set in force in this replica's log.
	Config []string
}

// Partitions calls fn with every partition this host holds a replica of
// (a log of at least one entry), in the store's order.
func (s *Service) Partitions(fn func(Held) error) error {
	prefix := []byte("t/m/")
	err := s.ps.db.Scan(prefix, func(k, v []byte) error {
		d := codec.NewDecoder(k[len(prefix):], errDecode)
		name := d.String()
		if err := d.Finish(); err != nil {
			return fmt.Errorf("txlog: metadata key %q: %w", k, err)
		}
		m, err := decodeMeta(v)
		if err != nil {
			return fmt.Errorf("txlog: partition %q: bad metadata: %w", name, err)
		}
		if m.Last == 0 {
			return nil
		}
		return fn(Held{Name: name, Last: m.Last, LastHash: m.LastHash, Commit: m.Commit, Base: m.Base, Config: m.Config})
	})
	if err != nil {
		return fmt.Errorf("txlog: list partitions: %w", err)
	}
	return nil
}

// dropBatch bounds the keys one store transaction of Drop deletes.
const dropBatch = 1000

// ErrLeading refuses to drop a partition while this host runs a request
// as its leader.
var ErrLeading = errors.New("txlog: this host leads the partition")

// Drop deletes this host's replica of a partition: its records, its index
// of writes and its log, in batches. Healing calls it once the partition's
// replica set in force no longer names this host and its members hold the
// log. The metadata stays, empty but for the ballot promised: a dropped
// replica must go on refusing lower ballots, or a deposed leader that took
// the host back into its set could commit through it what the new
// leader's majority never saw. A crash in the middle leaves a replica that
// is still listed and is dropped again; a leader that takes the host back
// into the set finds its log short and sends it the log again.
func (s *Service) Drop(partition string) error {
	p, err := s.ps.get(partition)
	if err != nil {
		return err
	}
	// A host that still takes itself for the leader steps down, unless a
	// request is running there: healing drops only a partition whose
	// leader (another host) has moved the set in force off this host, so
	// that belief is stale. Nothing else tells a host outside the set that
	// it was deposed: it used to refuse the drop for as long as it ran (a
	// leaving node waited on it for good).
	if !p.lead.TryLock() {
		return fmt.Errorf("%w: %q", ErrLeading, partition)
	}
	defer p.lead.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.leading = Ballot{}
	if err := s.ps.clear(p, false); err != nil {
		return fmt.Errorf("txlog: drop %q: %w", partition, err)
	}
	if err := s.ps.db.Sync(); err != nil {
		return fmt.Errorf("txlog: drop %q: %w", partition, err)
	}
	s.ps.mu.Lock()
	delete(s.ps.m, partition)
	s.ps.mu.Unlock()
	return nil
}

// deleteAll deletes every key under prefix, dropBatch keys per store
// transaction.
func (ps *parts) deleteAll(prefix []byte) error {
	for {
		var keys [][]byte
		err := ps.db.Scan(prefix, func(k, _ []byte) error {
			keys = append(keys, append([]byte(nil), k...))
			if len(keys) == dropBatch {
				return errStopScan
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStopScan) {
			return err
		}
		if len(keys) == 0 {
			return nil
		}
		err = ps.db.Update(func(w store.Writer) error {
			for _, k := range keys {
				if err := w.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
}

// Seed copies, onto this host, the committed log of a partition this host
// does not replicate yet, before the ring names it a replica (a node about
// to join). It has leader, the partition's leader, sync the partition:
// once every member holds the leader's head, every entry up to that head
// is committed. It then fetches the entries this host lacks up to there
// from the leader (after the leader's snapshot, if it compacted some of
// them), checks that they chain to that head, and keeps them as
// committed. A later leader that adds this host to the replica set then
// sends only what was written since, and one that takes over here adopts
// only that.
func (s *Service) Seed(ctx context.Context, partition, leader string) error {
	resp, err := s.Sync(ctx, partition, leader)
	if err != nil {
		return err
	}
	if resp.Synced < majority(len(resp.Members)) {
		return fmt.Errorf("%w: %q: %d of %d replicas hold the log's head", ErrUnavailable, partition, resp.Synced, len(resp.Members))
	}
	p, err := s.ps.get(partition)
	if err != nil {
		return err
	}
	p.mu.Lock()
	from := p.last + 1
	p.mu.Unlock()
	if from > resp.Tx.Height {
		return nil // as far as the head already
	}
	from, txs, err := s.fetchLog(ctx, p, leader, from, resp.Tx.Height, func() error {
		if !p.leading.IsZero() || p.last+1 != from {
			return fmt.Errorf("%w: %q: the host took part meanwhile", ErrUnavailable, partition)
		}
		return nil
	})
	if err != nil || from > resp.Tx.Height {
		return err // failed, or a snapshot took it as far as the head
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last+1 != from || !p.leading.IsZero() {
		return nil // the host took part meanwhile; the leader sends it the rest
	}
	prev := p.lastHash
	for i, t := range txs {
		if t.Height != from+uint64(i) || t.Prev != prev {
			return fmt.Errorf("txlog: %q: the log fetched from %s does not chain at %d", partition, leader, t.Height)
		}
		prev = t.Hash()
	}
	if prev != resp.Tx.Hash {
		return fmt.Errorf("txlog: %q: the log fetched from %s does not end in the head it synced", partition, leader)
	}
	if len(txs) == 0 {
		return nil
	}
	return s.ps.write(p, from, txs, p.promised, resp.Tx.Height, resp.Tx.Height, true)
}

// Lag reports how far the followers of the partitions this host leads are
// behind its logs: the most entries one follower lacks, and the entries
// they all lack together. Only partitions loaded since the host started
// count; a follower never heard from lacks the whole log.
func (s *Service) Lag() (most, total uint64) {
	s.ps.mu.Lock()
	ps := slices.Collect(maps.Values(s.ps.m))
	s.ps.mu.Unlock()
	for _, p := range ps {
		p.mu.Lock()
		if !p.leading.IsZero() {
			for _, m := range p.config {
				if m == s.cfg.Addr {
					continue
				}
				behind := p.last - min(p.match[m], p.last)
				most, total = max(most, behind), total+behind
			}
		}
		p.mu.Unlock()
	}
	return most, total
}
