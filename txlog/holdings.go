package txlog

import (
	"errors"
	"fmt"

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
		return fn(Held{Name: name, Last: m.Last, LastHash: m.LastHash, Commit: m.Commit, Config: m.Config})
	})
	if err != nil {
		return fmt.Errorf("txlog: list partitions: %w", err)
	}
	return nil
}

// dropBatch bounds the keys one store transaction of Drop deletes.
const dropBatch = 1000

// ErrLeading refuses to drop a partition this host leads.
var ErrLeading = errors.New("txlog: this host leads the partition")

// Drop deletes this host's replica of a partition: its records, its log,
// then its metadata, in batches. Healing calls it once the partition's
// replica set in force no longer names this host and its members hold the
// log. A crash in the middle leaves a replica that is still listed and is
// dropped again; a leader that takes the host back into the set finds its
// log short or broken and sends it the log again from where they agree.
func (s *Service) Drop(partition string) error {
	p, err := s.ps.get(partition)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.leading.IsZero() {
		return fmt.Errorf("%w: %q", ErrLeading, partition)
	}
	for _, prefix := range [][]byte{p.recPrefix(), append([]byte("t/l/"), p.key...)} {
		if err := s.ps.deleteAll(prefix); err != nil {
			return fmt.Errorf("txlog: drop %q: %w", partition, err)
		}
	}
	err = s.ps.db.Update(func(w store.Writer) error { return w.Delete(p.metaKey()) })
	if err != nil {
		return fmt.Errorf("txlog: drop %q: %w", partition, err)
	}
	p.last, p.lastHash, p.lastBal, p.commit, p.applied = 0, Hash{}, Ballot{}, 0, 0
	p.config, p.configAt, p.match = nil, 0, nil
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
