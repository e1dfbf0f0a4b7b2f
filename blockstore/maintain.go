package blockstore

import (
	"context"
	"fmt"
	"time"

	"github.com/difuse/difuse/level"
)

// What the cluster's maintenance (healing, garbage collection) does with
// blocks: on this host's copies, and between two hosts, past the replica
// sets that Set, Get and Delete go through.

// Holds reports whether this host holds block h.
func (s *Service) Holds(h Hash) (bool, error) { return s.local.Has(h) }

// Walk calls fn with every block this host holds.
func (s *Service) Walk(fn func(Hash) error) error { return s.local.Walk(fn) }

// Verify re-hashes this host's copy of h with v and returns its size:
// ErrCorrupt for a damaged copy, ErrNotFound for none.
func (s *Service) Verify(h Hash, v *Verifier) (int64, error) { return s.local.Verify(h, v) }

// Drop removes this host's copy of h, unsynced (a copy that comes back
// after a crash is dropped again).
func (s *Service) Drop(h Hash) error { return s.local.Delete(h, false) }

// Sweep deletes this host's blocks that keep does not hold and that were
// last used before cutoff (see Local.Sweep).
func (s *Service) Sweep(keep func(Hash) bool, cutoff time.Time, dryRun bool, each func() error) (SweepStats, error) {
	return s.local.Sweep(keep, cutoff, dryRun, each)
}

// Repair replaces this host's copy of h with a sound one read from its
// replica set at quorum.
func (s *Service) Repair(ctx context.Context, h Hash) error {
	data, err := s.Get(ctx, h, level.Quorum)
	if err == nil {
		_, err = s.local.PutHashed(h, data, true)
	}
	if err != nil {
		return fmt.Errorf("blockstore: repair %s: %w", h, err)
	}
	return nil
}

// HeldBy reports which of hashes the host at host holds.
func (s *Service) HeldBy(ctx context.Context, host string, hashes []Hash) ([]bool, error) {
	has, err := s.tr.Has(ctx, host, hashes, false)
	if err == nil && len(has) != len(hashes) {
		err = fmt.Errorf("blockstore: %s answered %d of %d hashes", host, len(has), len(hashes))
	}
	return has, err
}

// Send gives the host at host this host's copy of h, synced there, and
// returns its size: ErrNotFound if this host has none, ErrCorrupt if its
// copy is damaged.
func (s *Service) Send(ctx context.Context, host string, h Hash) (int, error) {
	data, err := s.local.Get(h)
	if err != nil {
		return 0, err
	}
	if err := s.tr.Put(ctx, host, h, data, true); err != nil {
		return 0, fmt.Errorf("blockstore: send %s to %s: %w", h, host, err)
	}
	return len(data), nil
}

// Fetch copies block h from the host at host onto this host, synced, after
// checking its hash (ErrCorrupt), and returns its size.
func (s *Service) Fetch(ctx context.Context, host string, h Hash) (int, error) {
	data, err := s.tr.Get(ctx, host, h)
	if err != nil {
		return 0, fmt.Errorf("blockstore: fetch %s from %s: %w", h, host, err)
	}
	if _, err := s.local.PutHashed(h, data, true); err != nil {
		return 0, fmt.Errorf("blockstore: fetch %s from %s: %w", h, host, err)
	}
	return len(data), nil
}
