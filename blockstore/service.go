package blockstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/ring"
)

// ErrUnavailable: too few replicas answered for the consistency level.
var ErrUnavailable = errors.New("blockstore: replicas unavailable")

// MaxBlockBytes bounds one block; chunking keeps blocks far smaller.
const MaxBlockBytes = 64 << 20

// Placer names a key's replica set, leader first; *ring.Host implements it.
type Placer interface {
	Lookup(ctx context.Context, key ring.ID, n int) (ring.Result, error)
}

// Config configures a Service.
type Config struct {
	// Addr is this host's address, as the ring names it. Required.
	Addr string
	// Replicas is N, the number of hosts that keep each block. Default 3.
	Replicas int
	// CallTimeout bounds one call to another host. Default 1s.
	CallTimeout time.Duration
	// Logger receives repairs and background failures; nil discards them.
	Logger *slog.Logger
	// Observe, if set, is told of every Set, Get and Delete at a valid
	// level: the
	// operation ("set", "get", "delete"), its level, how it ended and how
	// long it took (for metrics).
	Observe func(op string, l level.Level, err error, took time.Duration)
}

// Service is one host's part of the distributed block store: it keeps the
// blocks placed on it and runs Set, Get and Delete on any block's replica
// set, the ring's N successors of the block's hash. It is safe for
// concurrent use.
type Service struct {
	cfg    Config
	placer Placer
	tr     Transport
	local  *Local
	log    *slog.Logger
	// bg tracks background replication and repairs, for Wait.
	bg sync.WaitGroup
	// written and fresh count the bytes Set through this host, and those
	// some replica did not hold yet.
	written, fresh atomic.Int64
}

// Stats returns the host's block counts: what its store holds, and what
// clients stored through it.
func (s *Service) Stats() Stats {
	blocks, stored := s.local.Count()
	return NewStats(blocks, stored, s.written.Load(), s.fresh.Load())
}

// New returns a service keeping its blocks in local.
func New(cfg Config, placer Placer, tr Transport, local *Local) (*Service, error) {
	if cfg.Addr == "" {
		return nil, errors.New("blockstore: Config.Addr is required")
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 3
	}
	if cfg.Replicas < 1 {
		return nil, fmt.Errorf("blockstore: Replicas %d must be positive", cfg.Replicas)
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, placer: placer, tr: tr, local: local, log: cfg.Logger}, nil
}

// Local returns the host's own block store.
func (s *Service) Local() *Local { return s.local }

// Wait waits for the background replication and repairs started so far.
func (s *Service) Wait() { s.bg.Wait() }

// replicas returns the replica set of block h, leader first. While the
// ring cannot place the block (it is settling after a host died), it tries
// again until ctx ends.
func (s *Service) replicas(ctx context.Context, h Hash) ([]string, error) {
	var res ring.Result
	var err error
	for attempt := 1; ; attempt++ {
		if res, err = s.placer.Lookup(ctx, ring.ID(h), s.cfg.Replicas); err == nil && len(res.Replicas) > 0 {
			break
		}
		if err == nil {
			err = errors.New("the ring names no replica")
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: place %s: %v", ErrUnavailable, h, err)
		case <-time.After(min(time.Duration(attempt)*20*time.Millisecond, 200*time.Millisecond)):
		}
	}
	out := make([]string, len(res.Replicas))
	for i, r := range res.Replicas {
		out[i] = r.Addr
	}
	return out, nil
}

// need returns how many of n replicas a level waits for, and whether the
// first of them must be the leader.
func (s *Service) need(l level.Level, n int) (int, bool) {
	switch l {
	case level.All:
		return s.cfg.Replicas, false
	case level.Leader:
		return 1, true
	case level.Lazy:
		return 1, false
	}
	return n/2 + 1, false
}

// ---- calls on one replica, local or remote ----

// has asks a replica whether it holds block h; with touch, it marks the
// block used now if so.
func (s *Service) has(ctx context.Context, to string, h Hash, touch bool) (bool, error) {
	if to == s.cfg.Addr {
		got, err := s.HandleHas([]Hash{h}, touch)
		if err != nil {
			return false, err
		}
		return got[0], nil
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	got, err := s.tr.Has(cctx, to, []Hash{h}, touch)
	if err != nil {
		return false, err
	}
	if len(got) != 1 {
		return false, fmt.Errorf("blockstore: %s answered %d results for 1 hash", to, len(got))
	}
	return got[0], nil
}

func (s *Service) put(ctx context.Context, to string, h Hash, data []byte, sync bool) error {
	if to == s.cfg.Addr {
		return s.HandlePut(h, data, sync)
	}
	// A block of a few MiB takes longer than a small call.
	cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout+time.Duration(len(data)>>20)*s.cfg.CallTimeout)
	defer cancel()
	return s.tr.Put(cctx, to, h, data, sync)
}

func (s *Service) get(ctx context.Context, from string, h Hash) ([]byte, error) {
	if from == s.cfg.Addr {
		return s.local.Get(h)
	}
	cctx, cancel := context.WithTimeout(ctx, 4*s.cfg.CallTimeout)
	defer cancel()
	data, err := s.tr.Get(cctx, from, h)
	if err != nil {
		return nil, err
	}
	if got := Sum(data); got != h { // damaged on the way
		return nil, fmt.Errorf("%w: %s sent %d bytes for %s hashing to %s", ErrCorrupt, from, len(data), h, got)
	}
	return data, nil
}

func (s *Service) del(ctx context.Context, to string, h Hash, sync bool) error {
	if to == s.cfg.Addr {
		return s.HandleDelete(h, sync)
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	return s.tr.Delete(cctx, to, h, sync)
}

// background runs fn after the caller has its answer, bounded in time.
func (s *Service) background(what string, fn func(ctx context.Context) error) {
	s.bg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*s.cfg.CallTimeout)
		defer cancel()
		if err := fn(ctx); err != nil {
			s.log.Warn("background block work failed", "what", what, "err", err)
		}
	})
}

// ---- Set, Get, Delete ----

// Set stores data on its replica set at level l and returns its hash. A
// replica that already holds the block is not sent it again. At all,
// quorum and leader the replicas counted have the block on disk; at lazy,
// one replica has taken it and none need have synced it. Replicas not
// waited for get it in the background.
func (s *Service) Set(ctx context.Context, data []byte, l level.Level) (_ Hash, err error) {
	defer s.observe("set", l, time.Now(), &err)
	if len(data) > MaxBlockBytes {
		return Hash{}, fmt.Errorf("blockstore: a block of %d bytes (at most %d)", len(data), MaxBlockBytes)
	}
	data = bytes.Clone(data) // replicas not waited for still send it after Set returns
	h := Sum(data)
	s.written.Add(int64(len(data)))
	var counted atomic.Bool // the block was new to some replica
	sync := l != level.Lazy
	err = s.onReplicas(ctx, h, l, "have it", func(ctx context.Context, r string) error {
		// A replica that holds the block marks it used now, which keeps
		// the garbage collector off it until the write that uses it has
		// committed (see package gc).
		held, err := s.has(ctx, r, h, true)
		if err != nil || held {
			return err
		}
		if counted.CompareAndSwap(false, true) {
			s.fresh.Add(int64(len(data)))
		}
		return s.put(ctx, r, h, data, sync)
	})
	return h, err
}

// onReplicas runs fn on every replica of block h and waits until as many
// have succeeded as level l needs (the leader among them at leader); the
// others go on in the background. done describes success in the error.
func (s *Service) onReplicas(ctx context.Context, h Hash, l level.Level, done string, fn func(ctx context.Context, replica string) error) error {
	replicas, err := s.replicas(ctx, h)
	if err != nil {
		return err
	}
	need, leaderFirst := s.need(l, len(replicas))
	if need > len(replicas) {
		return fmt.Errorf("%w: level %s needs %d replicas of %s, the ring has %d", ErrUnavailable, l, need, h, len(replicas))
	}
	type result struct {
		addr string
		err  error
	}
	results := make(chan result, len(replicas))
	// Each replica's work outlives a caller that stops waiting for it.
	bctx := context.WithoutCancel(ctx)
	for _, r := range replicas {
		s.bg.Go(func() { results <- result{r, fn(bctx, r)} })
	}
	ok, failed := map[string]bool{}, map[string]error{}
	enough := func() bool { return len(ok) >= need && (!leaderFirst || ok[replicas[0]]) }
	for range replicas {
		res := <-results
		if res.err != nil {
			failed[res.addr] = res.err
		} else {
			ok[res.addr] = true
		}
		if enough() || (leaderFirst && failed[replicas[0]] != nil) {
			break
		}
	}
	if enough() {
		return nil
	}
	return fmt.Errorf("%w: level %s: %d of %d replicas of %s %s: %v", ErrUnavailable, l, len(ok), len(replicas), h, done, errors.Join(mapErrs(failed)...))
}

func mapErrs(m map[string]error) []error {
	var out []error
	for addr, err := range m {
		out = append(out, fmt.Errorf("%s: %w", addr, err))
	}
	return out
}

// Get returns block h, read from its replicas in turn (the leader first,
// or this host first at lazy if it holds a replica) until one gives bytes
// that hash to h. Replicas that were found to lack the block or to hold a
// damaged copy are repaired. At quorum and all it then makes sure that a
// majority, or every replica, holds the block, repairing those that do
// not.
func (s *Service) Get(ctx context.Context, h Hash, l level.Level) (_ []byte, err error) {
	defer s.observe("get", l, time.Now(), &err)
	if !l.Valid() {
		return nil, fmt.Errorf("blockstore: unknown level %d", l)
	}
	replicas, err := s.replicas(ctx, h)
	if err != nil {
		return nil, err
	}
	order := replicas
	if l == level.Lazy {
		for i, r := range replicas {
			if r == s.cfg.Addr {
				order = append([]string{r}, append(append([]string{}, replicas[:i]...), replicas[i+1:]...)...)
			}
		}
	}
	var data []byte
	asked := map[string]bool{}
	var lacking []string
	var errs []error
	notFound := 0
	for _, r := range order {
		asked[r] = true
		d, err := s.get(ctx, r, h)
		if err == nil {
			data = d
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", r, err))
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) {
			lacking = append(lacking, r)
		}
		if errors.Is(err, ErrNotFound) {
			notFound++
		}
	}
	if data == nil {
		if notFound == len(asked) {
			return nil, fmt.Errorf("%w: %s on none of %d replicas", ErrNotFound, h, len(asked))
		}
		return nil, fmt.Errorf("%w: level %s: no replica gave %s: %w", ErrUnavailable, l, h, errors.Join(errs...))
	}
	if l == level.Quorum || l == level.All {
		need, _ := s.need(l, len(replicas))
		holders := 1 // the replica that gave the block
		for _, r := range replicas {
			if asked[r] {
				continue
			}
			held, err := s.has(ctx, r, h, false)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("%s: %w", r, err))
			case held:
				holders++
			default:
				lacking = append(lacking, r)
			}
		}
		for _, r := range lacking {
			if err := s.put(ctx, r, h, data, true); err != nil {
				errs = append(errs, fmt.Errorf("repair %s: %w", r, err))
				continue
			}
			s.log.Info("repaired a block", "block", h.String(), "replica", r)
			holders++
		}
		if holders < need {
			return nil, fmt.Errorf("%w: level %s: %d of %d replicas hold %s: %w", ErrUnavailable, l, holders, len(replicas), h, errors.Join(errs...))
		}
		return data, nil
	}
	for _, r := range lacking {
		s.background("repair "+h.String()+" on "+r, func(ctx context.Context) error {
			if err := s.put(ctx, r, h, data, true); err != nil {
				return err
			}
			s.log.Info("repaired a block", "block", h.String(), "replica", r)
			return nil
		})
	}
	return data, nil
}

// observe tells Config.Observe, if set, of an operation that started at
// start and ended with *err.
func (s *Service) observe(op string, l level.Level, start time.Time, err *error) {
	if s.cfg.Observe != nil && l.Valid() {
		s.cfg.Observe(op, l, *err, time.Since(start))
	}
}

// Count reports, for each block, how many hosts of its replica set hold
// it (held) and how many hosts the set has (of). It asks each host once,
// for all the blocks it should hold; a host that does not answer is an
// error, not a host without the blocks.
func (s *Service) Count(ctx context.Context, hashes []Hash) (held, of []int, err error) {
	held, of = make([]int, len(hashes)), make([]int, len(hashes))
	byHost := map[string][]int{}
	for i, h := range hashes {
		replicas, err := s.replicas(ctx, h)
		if err != nil {
			return nil, nil, err
		}
		of[i] = len(replicas)
		for _, r := range replicas {
			byHost[r] = append(byHost[r], i)
		}
	}
	for host, idx := range byHost {
		batch := make([]Hash, len(idx))
		for j, i := range idx {
			batch[j] = hashes[i]
		}
		var present []bool
		if host == s.cfg.Addr {
			present, err = s.HandleHas(batch, false)
		} else {
			cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout+time.Duration(len(batch))*time.Millisecond)
			present, err = s.tr.Has(cctx, host, batch, false)
			cancel()
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: replica %s: %v", ErrUnavailable, host, err)
		}
		for j, i := range idx {
			if present[j] {
				held[i]++
			}
		}
	}
	return held, of, nil
}

// Delete removes block h from its replicas; the level says how many must
// have removed it before Delete returns. The rest follow in the
// background. Deleting a block no replica holds succeeds.
func (s *Service) Delete(ctx context.Context, h Hash, l level.Level) (err error) {
	defer s.observe("delete", l, time.Now(), &err)
	return s.onReplicas(ctx, h, l, "deleted it", func(ctx context.Context, r string) error {
		return s.del(ctx, r, h, l != level.Lazy)
	})
}

// ---- Handler ----

// HandleHas reports which of hashes this host holds, marking them used
// now with touch.
func (s *Service) HandleHas(hashes []Hash, touch bool) ([]bool, error) {
	has := s.local.Has
	if touch {
		has = s.local.Touch
	}
	out := make([]bool, len(hashes))
	for i, h := range hashes {
		ok, err := has(h)
		if err != nil {
			return nil, err
		}
		out[i] = ok
	}
	return out, nil
}

// HandlePut stores a block sent as h after checking its hash, syncing it if
// asked.
func (s *Service) HandlePut(h Hash, data []byte, sync bool) error {
	_, err := s.local.PutHashed(h, data, sync)
	return err
}

// HandleGet returns a block after checking its hash.
func (s *Service) HandleGet(h Hash) ([]byte, error) { return s.local.Get(h) }

// HandleDelete removes a block, syncing the removal if asked.
func (s *Service) HandleDelete(h Hash, sync bool) error { return s.local.Delete(h, sync) }
