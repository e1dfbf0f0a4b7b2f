package txlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/store"
)

// Bounds on requests.
const (
	// MaxNameBytes bounds partition and record names.
	MaxNameBytes = 1024
	// MaxChanges bounds the records one write changes.
	MaxChanges = 1024
	// MaxList bounds the records one list returns.
	MaxList = 1024
)

// checkName validates a partition or record name.
func checkName(what, name string, allowEmpty bool) error {
	switch {
	case name == "" && !allowEmpty:
		return fmt.Errorf("%w: empty %s", ErrBadRequest, what)
	case len(name) > MaxNameBytes:
		return fmt.Errorf("%w: %s of %d bytes (at most %d)", ErrBadRequest, what, len(name), MaxNameBytes)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrBadRequest, what)
	}
	return nil
}

// validate checks a request before it is routed anywhere.
func (s *Service) validate(req Request) error {
	if err := checkName("partition", req.Partition, false); err != nil {
		return err
	}
	if !req.Level.Valid() {
		return fmt.Errorf("%w: unknown consistency level %d", ErrBadRequest, req.Level)
	}
	switch req.Kind {
	case KindWrite:
		if req.Level == level.Lazy {
			return fmt.Errorf("%w: writes take all, quorum or leader, not lazy", ErrBadRequest)
		}
		if len(req.Write) == 0 || len(req.Write) > MaxChanges {
			return fmt.Errorf("%w: a write of %d changes (1 to %d)", ErrBadRequest, len(req.Write), MaxChanges)
		}
		seen := map[string]bool{}
		total, writes := 0, 0
		for _, c := range req.Write {
			if err := checkName("record name", c.Name, true); err != nil {
				return err
			}
			if seen[c.Name] {
				return fmt.Errorf("%w: record %q changed twice in one write", ErrBadRequest, c.Name)
			}
			seen[c.Name] = true
			if c.Delete && c.Value != nil {
				return fmt.Errorf("%w: a delete of %q with a value", ErrBadRequest, c.Name)
			}
			if c.Check && (c.IfMatch == nil || c.Delete || c.Value != nil) {
				return fmt.Errorf("%w: a check of %q takes a condition and nothing to write", ErrBadRequest, c.Name)
			}
			if !c.Check {
				writes++
			}
			total += len(c.Value)
			if len(c.Value) > s.cfg.MaxValueBytes || total > s.cfg.MaxValueBytes {
				return fmt.Errorf("%w: values of %d bytes (at most %d in one write)", ErrBadRequest, total, s.cfg.MaxValueBytes)
			}
		}
		if writes == 0 {
			return fmt.Errorf("%w: a write that changes no record", ErrBadRequest)
		}
		return checkName("prefix", req.IfEmpty, true)
	case KindSync:
		if req.Write != nil || req.Name != "" {
			return fmt.Errorf("%w: a sync names no record and changes none", ErrBadRequest)
		}
		return nil
	case KindRead, KindHistory, KindList:
		if req.Write != nil {
			return fmt.Errorf("%w: a read with changes", ErrBadRequest)
		}
		if req.Kind == KindList && (req.Level == level.Lazy || req.Limit < 0 || req.Limit > MaxList) {
			return fmt.Errorf("%w: a list takes all, quorum or leader, and a limit of at most %d", ErrBadRequest, MaxList)
		}
		return checkName("record name", req.Name, true)
	}
	return fmt.Errorf("%w: unknown request kind %d", ErrBadRequest, req.Kind)
}

// Write applies changes to records of one partition atomically, at the
// given level (All, Quorum or Leader), after checking their conditions.
func (s *Service) Write(ctx context.Context, partition string, changes []Change, lv level.Level) (TxRef, error) {
	resp, err := s.Do(ctx, Request{Partition: partition, Level: lv, Kind: KindWrite, Write: changes})
	return resp.Tx, err
}

// Read returns a record's current state at the given level. A record that
// does not exist gives ErrNotFound, with the returned Record still carrying
// the hash of the transaction that deleted it, if any.
func (s *Service) Read(ctx context.Context, partition, name string, lv level.Level) (Record, error) {
	resp, err := s.Do(ctx, Request{Partition: partition, Level: lv, Kind: KindRead, Name: name})
	if err == nil && !resp.Record.Exists {
		return resp.Record, ErrNotFound
	}
	return resp.Record, err
}

// List returns the existing records of a partition whose names start with
// prefix, in name order, after the name after (if not empty), at most limit
// of them (MaxList if 0), and whether more follow. level is all, quorum or
// leader, as for a read.
func (s *Service) List(ctx context.Context, partition, prefix, after string, limit int, lv level.Level) ([]Record, bool, error) {
	resp, err := s.Do(ctx, Request{Partition: partition, Level: lv, Kind: KindList, Name: prefix, After: after, Limit: limit})
	return resp.Records, resp.More, err
}

// Sync asks leader, the partition's leader in the caller's view of the
// ring, to move its replica set to the ring's (establishing itself and
// reconfiguring, as any request does) and then to bring every member's log
// level with its own. The response names the set in force (Members), how
// many of them hold the leader's log up to its head (Synced) and that head
// (Tx). A member that does not answer is not an error: Synced is then
// short. A host that does not lead the partition in its own view answers
// ErrNotLeader. Healing calls Sync for partitions whose replicas differ or
// sit on the wrong hosts; a host that has left the ring can still call it.
func (s *Service) Sync(ctx context.Context, partition, leader string) (Response, error) {
	req := Request{Partition: partition, Level: level.Quorum, Kind: KindSync}
	if err := s.validate(req); err != nil {
		return Response{}, err
	}
	if leader == s.cfg.Addr {
		return s.HandleForward(ctx, req)
	}
	return s.tr.Forward(ctx, leader, req)
}

// History returns the transactions of a partition's log that changed the
// record, oldest first, read from the leader after a quorum read.
func (s *Service) History(ctx context.Context, partition, name string) ([]*Tx, error) {
	resp, err := s.Do(ctx, Request{Partition: partition, Level: level.Quorum, Kind: KindHistory, Name: name})
	return resp.History, err
}

// Do runs a request: on this host if it leads the partition (or, for a lazy
// read, holds a replica), else on the leader's host. While the leader is
// unreachable or the ring is settling it retries until ctx ends; while too
// few replicas answer a leader's takeover, for Config.Patience.
func (s *Service) Do(ctx context.Context, req Request) (resp Response, err error) {
	if s.ps.closed.Load() {
		return Response{}, errClosed
	}
	if err := s.validate(req); err != nil {
		return Response{}, err
	}
	if s.cfg.Observe != nil { // of valid requests only: their kinds and levels are few
		start := time.Now()
		defer func() { s.cfg.Observe(req, err, time.Since(start)) }()
	}
	if req.Kind == KindWrite && req.ID.IsZero() {
		req.ID = NewWriteID() // so that a retry is not applied twice
	}
	var lastErr error
	var unavailableSince time.Time
	for attempt := 0; ; attempt++ {
		if s.ps.closed.Load() {
			return Response{}, errClosed
		}
		replicas, err := s.replicaSet(ctx, req.Partition)
		if err == nil {
			resp, err := s.route(ctx, req, replicas)
			if errors.Is(err, ErrTakeover) {
				if unavailableSince.IsZero() {
					unavailableSince = time.Now()
				}
				if time.Since(unavailableSince) >= s.cfg.Patience {
					return resp, err
				}
			} else if err == nil || !retryable(err) {
				return resp, err
			}
			lastErr = err
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return Response{}, fmt.Errorf("%w: %v", ErrUnavailable, lastErr)
		case <-time.After(min(time.Duration(attempt+1)*20*time.Millisecond, 200*time.Millisecond)):
		}
	}
}

// retryable reports whether a failed request may succeed once the ring or
// the leadership settles.
func retryable(err error) bool {
	return !errors.Is(err, ErrConflict) && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrBadRequest) &&
		!errors.Is(err, ErrUnavailable)
}

func (s *Service) replicaSet(ctx context.Context, partition string) ([]string, error) {
	out, err := s.placed(ctx, partition, s.cfg.Replicas)
	if err != nil {
		return nil, err
	}
	s.NoteHosts(len(out))
	return out, nil
}

// placed returns the first n hosts the ring places partition on.
func (s *Service) placed(ctx context.Context, partition string, n int) ([]string, error) {
	res, err := s.placer.Lookup(ctx, ring.HashKey([]byte(partition)), n)
	if err != nil {
		return nil, err
	}
	if len(res.Replicas) == 0 {
		return nil, fmt.Errorf("txlog: %q: the ring names no replica", partition)
	}
	out := make([]string, len(res.Replicas))
	for i, r := range res.Replicas {
		out[i] = r.Addr
	}
	return out, nil
}

func (s *Service) route(ctx context.Context, req Request, replicas []string) (Response, error) {
	if req.Kind == KindRead && s.cfg.UnsafeLocalReads && slices.Contains(replicas, s.cfg.Addr) {
		return s.lazyRead(ctx, req, []string{s.cfg.Addr})
	}
	if req.Kind == KindRead && req.Level == level.Lazy {
		return s.lazyRead(ctx, req, replicas)
	}
	if replicas[0] == s.cfg.Addr {
		return s.lead(ctx, req, replicas)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*s.cfg.CallTimeout)
	defer cancel()
	return s.tr.Forward(cctx, replicas[0], req)
}

// HandleForward runs a request that another host routed here because this
// host leads the partition in its view of the ring.
func (s *Service) HandleForward(ctx context.Context, req Request) (Response, error) {
	if s.ps.closed.Load() {
		return Response{}, errClosed
	}
	if err := s.validate(req); err != nil {
		return Response{}, err
	}
	replicas, err := s.replicaSet(ctx, req.Partition)
	if err != nil {
		return Response{}, err
	}
	if replicas[0] != s.cfg.Addr {
		return Response{}, fmt.Errorf("%w: %q is led by %s", ErrNotLeader, req.Partition, replicas[0])
	}
	return s.lead(ctx, req, replicas)
}

// lead runs a request as the partition's leader.
func (s *Service) lead(ctx context.Context, req Request, replicas []string) (Response, error) {
	if req.Kind != KindWrite && req.Kind != KindSync && s.absent(ctx, req, replicas) {
		return Response{Record: Record{Name: req.Name}}, nil
	}
	p, err := s.ps.get(req.Partition)
	if err != nil {
		return Response{}, err
	}
	p.lead.Lock()
	defer p.lead.Unlock()
	if err := s.establish(ctx, p, replicas); err != nil {
		return Response{}, err
	}
	if s.ps.closed.Load() {
		return Response{}, errClosed // a dead process answers nothing
	}
	switch req.Kind {
	case KindWrite:
		return s.leadWrite(ctx, p, req)
	case KindSync:
		return s.leadSync(ctx, p)
	}
	// Reads at quorum and all first bring that many replicas level with the
	// leader, which also proves it still leads; leader reads do not.
	p.mu.Lock()
	ballot, members := p.leading, slices.Clone(p.config)
	p.mu.Unlock()
	if req.Level == level.Quorum || req.Level == level.All {
		if err := s.confirm(ctx, p, req.Level); err != nil {
			return Response{}, err
		}
	}
	name := req.Name
	p.mu.Lock()
	if p.leading != ballot || p.promised != ballot {
		p.mu.Unlock()
		return Response{}, fmt.Errorf("%w: %q: deposed while reading", ErrStaleBallot, p.name)
	}
	if req.Kind == KindList {
		limit := req.Limit
		if limit == 0 {
			limit = MaxList
		}
		recs, more, err := s.ps.list(p, name, req.After, limit)
		p.mu.Unlock()
		return Response{Records: recs, More: more}, err
	}
	rec, err := s.ps.record(p, name)
	p.mu.Unlock()
	if err != nil {
		return Response{}, err
	}
	if req.Level == level.All {
		if err := s.checkAgree(ctx, p, members, rec); err != nil {
			return Response{}, err
		}
	}
	if req.Kind == KindHistory {
		h, err := s.history(p, name, rec)
		return Response{Record: rec, History: h}, err
	}
	return Response{Record: rec}, nil
}

// confirm proves that this host still leads p, before it answers from its
// records: it brings a majority of the replica set in force (every member,
// at level all) level with its log, at the ballot it leads with, and checks
// it has not been deposed meanwhile. A deposed leader gets ErrStaleBallot,
// which makes the caller look the leader up again. p.lead must be held.
func (s *Service) confirm(ctx context.Context, p *part, lv level.Level) error {
	p.mu.Lock()
	target, members, ballot := p.last, slices.Clone(p.config), p.leading
	p.mu.Unlock()
	enough := func(acked map[string]bool) bool { return countSet(acked, members) >= majority(len(members)) }
	if lv == level.All {
		enough = func(acked map[string]bool) bool {
			return countSet(acked, members) == len(members) && len(members) >= s.cfg.Replicas
		}
	}
	self := func() error { return s.ps.syncHeight(p, target) }
	if acked, err := s.replicate(ctx, p, members, target, enough, self); !enough(acked) {
		if errors.Is(err, ErrStaleBallot) {
			return err // deposed meanwhile: the caller looks the leader up again
		}
		if len(members) < s.cfg.Replicas && countSet(acked, members) == len(members) {
			return fmt.Errorf("%w: %q: level all: the replica set has %d of the %d replicas (a host is missing)", ErrUnavailable, p.name, len(members), s.cfg.Replicas)
		}
		msg := fmt.Sprintf("%q: %d of %d replicas answered", p.name, countSet(acked, members), len(members))
		if err != nil {
			msg += ": " + err.Error()
		}
		return fmt.Errorf("%w: %s", ErrUnavailable, msg)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ballot.IsZero() || p.leading != ballot || p.promised != ballot {
		return fmt.Errorf("%w: %q: deposed while confirming", ErrStaleBallot, p.name)
	}
	return nil
}

// leadSync brings every member of the set in force up to the leader's log
// head and reports how many hold it.
func (s *Service) leadSync(ctx context.Context, p *part) (Response, error) {
	p.mu.Lock()
	target, hash, members := p.last, p.lastHash, slices.Clone(p.config)
	p.mu.Unlock()
	all := func(acked map[string]bool) bool { return countSet(acked, members) == len(members) }
	acked, err := s.replicate(ctx, p, members, target, all, func() error { return s.ps.syncHeight(p, target) })
	if errors.Is(err, ErrStaleBallot) {
		return Response{}, err
	}
	synced := countSet(acked, members)
	p.mu.Lock()
	quiet := time.Since(p.syncLogged) < time.Minute
	if synced < len(members) && !quiet {
		p.syncLogged = time.Now()
	}
	p.mu.Unlock()
	if synced < len(members) && !quiet {
		s.log.Info("sync: not every member holds the log", "partition", p.name, "members", members, "synced", synced, "height", target, "err", err)
	}
	return Response{Tx: TxRef{Hash: hash, Height: target}, Members: members, Synced: synced}, nil
}

// checkAgree reads the record on every other replica and fails unless all
// hold the leader's version.
func (s *Service) checkAgree(ctx context.Context, p *part, replicas []string, rec Record) error {
	for _, r := range replicas {
		if r == s.cfg.Addr {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
		other, err := s.tr.ReadLocal(cctx, r, p.name, rec.Name)
		cancel()
		if err != nil {
			return fmt.Errorf("%w: %q: replica %s: %v", ErrUnavailable, p.name, r, err)
		}
		if other.Hash != rec.Hash {
			return fmt.Errorf("%w: %q: replica %s holds %s of %q, the leader %s", ErrUnavailable, p.name, r, other.Hash, rec.Name, rec.Hash)
		}
	}
	return nil
}

// history walks a record's own hash chain back from its current version,
// as far as compaction kept it.
func (s *Service) history(p *part, name string, rec Record) ([]*Tx, error) {
	var out []*Tx
	for h, want := rec.Height, rec.Hash; h != 0; {
		t, err := s.ps.entry(p, h)
		if errors.Is(err, store.ErrNotFound) && h <= p.baseNow() {
			break // compacted
		}
		if err != nil {
			return nil, err
		}
		if t.Hash() != want {
			return nil, fmt.Errorf("txlog: %q: the chain of %q breaks at height %d", p.name, name, h)
		}
		out = append(out, t)
		h, want = 0, Hash{}
		for _, op := range t.Ops {
			if op.Name == name && !op.Prev.IsZero() {
				if op.PrevHeight >= t.Height {
					return nil, fmt.Errorf("txlog: %q: the chain of %q points forward at height %d", p.name, name, t.Height)
				}
				h, want = op.PrevHeight, op.Prev
			}
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// leadWrite checks the write's conditions against the leader's records and
// commits it. A failed condition is answered only once the leader has
// confirmed it still leads: a deposed leader that had not heard of its
// successor would otherwise report a conflict from stale records.
func (s *Service) leadWrite(ctx context.Context, p *part, req Request) (Response, error) {
	resp, err := s.leadWriteUnconfirmed(ctx, p, req)
	if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
		if cerr := s.confirm(ctx, p, level.Quorum); cerr != nil {
			return Response{}, cerr
		}
	}
	return resp, err
}

// leadWriteUnconfirmed is leadWrite without the confirmation of a failed
// condition.
func (s *Service) leadWriteUnconfirmed(ctx context.Context, p *part, req Request) (Response, error) {
	if !req.ID.IsZero() {
		p.mu.Lock()
		t, err := s.ps.written(p, req.ID)
		p.mu.Unlock()
		if err != nil {
			return Response{}, err
		}
		if t != nil {
			// An earlier attempt of this write was applied: answer with it.
			s.log.Debug("write applied before", "partition", p.name, "height", t.Height)
			if err := s.reaffirm(ctx, p, t, req.Level); err != nil {
				return Response{}, err
			}
			return Response{Tx: TxRef{Hash: t.Hash(), Height: t.Height}}, nil
		}
	}
	if req.IfEmpty != "" {
		p.mu.Lock()
		recs, _, err := s.ps.list(p, req.IfEmpty, "", 1)
		p.mu.Unlock()
		if err != nil {
			return Response{}, err
		}
		if len(recs) > 0 {
			return Response{Record: recs[0]}, fmt.Errorf("%w: %q holds %q, under %q", ErrConflict, p.name, recs[0].Name, req.IfEmpty)
		}
	}
	ops := make([]Op, 0, len(req.Write))
	for _, c := range req.Write {
		p.mu.Lock()
		rec, err := s.ps.record(p, c.Name)
		p.mu.Unlock()
		if err != nil {
			return Response{}, err
		}
		if c.IfMatch != nil {
			cur := rec.Hash
			if !rec.Exists {
				cur = Hash{}
			}
			if cur != *c.IfMatch {
				return Response{Record: rec}, fmt.Errorf("%w: %q/%q is at %s", ErrConflict, p.name, c.Name, cur)
			}
		}
		if c.Check {
			continue
		}
		kind := OpSet
		if c.Delete {
			if !rec.Exists {
				return Response{Record: rec}, fmt.Errorf("%w: %q/%q", ErrNotFound, p.name, c.Name)
			}
			kind = OpDelete
		}
		ops = append(ops, Op{Kind: kind, Name: c.Name, Value: c.Value, Prev: rec.Hash, PrevHeight: rec.Height})
	}
	t, err := s.appendAndReplicate(ctx, p, req.ID, ops, req.Level)
	if err != nil {
		return Response{}, err
	}
	return Response{Tx: TxRef{Hash: t.Hash(), Height: t.Height}}, nil
}

// absent reports whether a read of req's partition finds nothing: this host
// holds nothing of it, nor does any host of the ring's set (each of which
// must answer), nor any of the hosts after the set that answers (the hosts
// a creation asks, see beyondSet), the ring's set is as wide as a creation
// needs (creationWidth) and the ring has been still as long as a creation
// needs. Such a read answers that nothing is there without creating the
// partition, so reads of random keys cost no disk or memory. A write
// acknowledged before the read began is on every host of the set it was
// created on, and that set meets any set as wide as a creation needs, so
// the write is seen.
func (s *Service) absent(ctx context.Context, req Request, ringSet []string) bool {
	if _, err := s.ps.find(req.Partition); !errors.Is(err, ErrNoPartition) {
		return false
	}
	if len(ringSet) < s.creationWidth() || s.ringStill() < s.cfg.CreationSettle {
		return false
	}
	hosts := s.beyondSet(ctx, req.Partition, ringSet)
	var held atomic.Bool
	var wg sync.WaitGroup
	for _, h := range hosts {
		if h == s.cfg.Addr {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
			defer cancel()
			_, err := s.tr.ReadLocal(cctx, h, req.Partition, "")
			if !errors.Is(err, ErrNoPartition) && (err == nil || slices.Contains(ringSet, h)) {
				held.Store(true)
			}
		})
	}
	wg.Wait()
	return !held.Load()
}

// lazyRead answers from this host's replica if it holds one, else from the
// first replica that answers.
func (s *Service) lazyRead(ctx context.Context, req Request, replicas []string) (Response, error) {
	var lastErr error
	for _, r := range replicas {
		var rec Record
		var err error
		if r == s.cfg.Addr {
			rec, err = s.HandleReadLocal(req.Partition, req.Name)
		} else {
			cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
			rec, err = s.tr.ReadLocal(cctx, r, req.Partition, req.Name)
			cancel()
		}
		if errors.Is(err, ErrNoPartition) {
			rec, err = Record{Name: req.Name}, nil // nothing there, as far as this replica knows
		}
		if err == nil {
			return Response{Record: rec}, nil
		}
		lastErr = err
	}
	return Response{}, fmt.Errorf("%w: no replica of %q answered: %v", ErrUnavailable, req.Partition, lastErr)
}
