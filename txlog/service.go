package txlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/store"
)

// Placer names a key's replica set, leader first; *ring.Host implements it.
type Placer interface {
	Lookup(ctx context.Context, key ring.ID, n int) (ring.Result, error)
}

// Config configures a Service.
type Config struct {
	// Addr is this host's address, as the ring names it. Required.
	Addr string
	// Replicas is N, the size of every partition's replica set. Default 3.
	Replicas int
	// CallTimeout bounds one call to another host. Default 1s.
	CallTimeout time.Duration
	// MaxValueBytes bounds one record's value. Default 1 MiB.
	MaxValueBytes int
	// Patience is how long a request keeps retrying while too few
	// replicas answer, so that the ring can notice a dead host and name
	// another replica, before it reports them unavailable. Default 5
	// CallTimeouts.
	Patience time.Duration
	// Logger receives leadership changes; nil discards them.
	Logger *slog.Logger
	// UnsafeLocalReads makes a replica answer reads at every level from
	// its own copy, without the leader: a planted bug (stale reads), for
	// the test that shows the Jepsen harness catches one. Never set it
	// otherwise.
	UnsafeLocalReads bool
	// UnsafeForgetPromises makes a replica forget its promises: it
	// answers every prepare without recording a promise, and accepts
	// appends of any ballot, so a deposed leader can still have its
	// entries accepted. A planted bug, for the fault-injection harness to
	// catch; never set it otherwise.
	UnsafeForgetPromises bool
	// Clock is this host's wall clock, which stamps the entries it leads
	// and when its replicas learned each write, and by which compaction
	// reckons the retention. Durations (timeouts, patience) are measured
	// on the real clock. Default time.Now.
	Clock func() time.Time
	// CreationSettle is how long the ring must have been still here (the
	// hosts it shows unchanged: NoteRingChange) before this host creates
	// a partition, and how long after New it waits before the first.
	// Hosts whose views of a changing ring disagree may name disjoint
	// replica sets for a key, and two creations on disjoint sets never
	// meet. Zero: no wait.
	CreationSettle time.Duration
	// Observe, if set, is told of every valid request Do ran: what it
	// was, how it ended and how long it took (for metrics).
	Observe func(req Request, err error, took time.Duration)
}

// Service is one host's part of the replicated transaction log: it keeps
// its replicas of the partitions placed on it, leads those whose replica
// set it heads, and routes clients' requests to leaders. It is safe for
// concurrent use.
type Service struct {
	cfg    Config
	placer Placer
	tr     Transport
	ps     *parts
	log    *slog.Logger
	// hosts is the most hosts the cluster has been seen to have; kept in
	// the store (see NoteHosts).
	hosts atomic.Int64
	// started is when New ran; ringChanged, when the ring last changed,
	// in nanoseconds after started (both on the real clock).
	started     time.Time
	ringChanged atomic.Int64
}

// New returns a service storing its replicas in db.
func New(cfg Config, placer Placer, tr Transport, db kv) (*Service, error) {
	if cfg.Addr == "" {
		return nil, errors.New("txlog: Config.Addr is required")
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 3
	}
	if cfg.Replicas < 1 || cfg.Replicas%2 == 0 {
		return nil, fmt.Errorf("txlog: Replicas %d must be odd and positive", cfg.Replicas)
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = time.Second
	}
	if cfg.Patience == 0 {
		cfg.Patience = 5 * cfg.CallTimeout
	}
	if cfg.MaxValueBytes == 0 {
		cfg.MaxValueBytes = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	svc := &Service{cfg: cfg, placer: placer, tr: tr, ps: &parts{db: db, m: map[string]*part{}}, log: cfg.Logger, started: time.Now()}
	svc.ps.now = func() time.Time { return svc.cfg.Clock() }
	if err := svc.loadHosts(); err != nil {
		return nil, err
	}
	return svc, nil
}

// Close stops the service from changing its store: every later write,
// promise or apply fails, and leader work in the background stops at its
// next step. Call it before closing the store, or to simulate a process
// that dies.
func (s *Service) Close() { s.ps.closed.Store(true) }

// maxBallot is the highest ballot number a replica accepts. Elections raise
// ballots one at a time, so no cluster reaches it; a request above it is
// refused, so a peer cannot push a promise to where the next ballot
// would wrap around to zero.
const maxBallot = 1 << 62

// majority returns the size of a majority of n replicas.
func majority(n int) int { return n/2 + 1 }

// ---- Replica side ----

// HandlePrepare promises ballot b for the partition unless a higher one was
// promised, and reports the replica's log head.
func (s *Service) HandlePrepare(partition string, b Ballot) (PrepareReply, error) {
	p, err := s.ps.get(partition)
	if err != nil {
		return PrepareReply{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if b.N > maxBallot {
		return PrepareReply{}, fmt.Errorf("%w: %q: ballot %s beyond the ceiling %d", ErrBadRequest, partition, b, uint64(maxBallot))
	}
	if s.cfg.UnsafeForgetPromises {
		reply := p.head()
		reply.Promised = b // promised, and at once forgotten
		return reply, nil
	}
	if b.Less(p.promised) {
		return PrepareReply{Promised: p.promised}, nil
	}
	reply := p.head()
	if b != p.promised {
		if err := s.ps.promise(p, b); err != nil {
			return PrepareReply{}, err
		}
	}
	reply.Promised = b
	return reply, nil
}

// head reports the replica's log head as a successful PrepareReply. p.mu
// must be held.
func (p *part) head() PrepareReply {
	return PrepareReply{OK: true, Last: p.last, LastHash: p.lastHash, LastBal: p.lastBal, Commit: p.commit}
}

// HandleAppend accepts a leader's entries if its ballot is not stale and
// the entries follow the replica's log, syncing them before it answers.
func (s *Service) HandleAppend(ctx context.Context, req AppendRequest) (AppendReply, error) {
	p, err := s.ps.get(req.Partition)
	if err != nil {
		return AppendReply{}, err
	}
	if req.Ballot.N > maxBallot {
		return AppendReply{}, fmt.Errorf("%w: %q: ballot %s beyond the ceiling %d", ErrBadRequest, req.Partition, req.Ballot, uint64(maxBallot))
	}
	if req.Install {
		return s.handleInstall(ctx, p, req)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if req.Ballot.Less(p.promised) && !s.cfg.UnsafeForgetPromises {
		return AppendReply{Stale: true, Promised: p.promised}, nil
	}
	if req.PrevHeight > p.last {
		return AppendReply{Mismatch: true, Last: p.last}, nil
	}
	if req.PrevHeight < p.base {
		// The entries up to the base are committed here, so the leader's
		// are the same: skip them, checking the leader's entry at the
		// base against ours. A leader whose idea of this replica's log is
		// older than the replica's compaction sends such appends.
		skip := p.base - req.PrevHeight
		if skip > uint64(len(req.Txs)) {
			return AppendReply{Last: p.last}, nil
		}
		if t := req.Txs[skip-1]; t.Height != p.base || t.Hash() != p.baseHash {
			return AppendReply{}, fmt.Errorf("%w: %q: the leader's entry at %d is not the one committed and compacted here", ErrBadRequest, p.name, p.base)
		}
		req.PrevHeight, req.PrevHash, req.Txs = p.base, p.baseHash, req.Txs[skip:]
	}
	if h, err := s.ps.hashAtLocked(p, req.PrevHeight); err != nil || h != req.PrevHash {
		return AppendReply{Mismatch: true, Last: min(p.last, req.PrevHeight-1)}, nil
	}
	for i, t := range req.Txs {
		if t.Partition != req.Partition || t.Height != req.PrevHeight+uint64(i)+1 {
			return AppendReply{}, fmt.Errorf("%w: entry %d of the append is out of place", ErrBadRequest, i)
		}
		prev := req.PrevHash
		if i > 0 {
			prev = req.Txs[i-1].Hash()
		}
		if t.Prev != prev {
			return AppendReply{}, fmt.Errorf("%w: entry at %d does not chain to its predecessor", ErrBadRequest, t.Height)
		}
	}
	if !p.leading.IsZero() && p.leading.Less(req.Ballot) {
		p.leading = Ballot{}
	}
	// The leader's commit only covers what it has verified we share.
	shared := req.PrevHeight + uint64(len(req.Txs))
	commit := min(req.Commit, shared)
	if err := s.ps.write(p, req.PrevHeight+1, req.Txs, req.Ballot, commit, commit, true); err != nil {
		return AppendReply{}, err
	}
	return AppendReply{Last: p.last}, nil
}

// handleInstall installs the leader's snapshot at req.PrevHeight, which
// it fetches from the leader, unless this replica has committed as far.
func (s *Service) handleInstall(ctx context.Context, p *part, req AppendRequest) (AppendReply, error) {
	p.mu.Lock()
	stale, promised := req.Ballot.Less(p.promised), p.promised
	p.mu.Unlock()
	if stale {
		return AppendReply{Stale: true, Promised: promised}, nil
	}
	_, err := s.installFrom(ctx, p, req.Ballot.Host, req.PrevHeight, func() error {
		if !p.leading.IsZero() && p.leading.Less(req.Ballot) {
			p.leading = Ballot{}
		}
		if req.Ballot.Less(p.promised) || !p.leading.IsZero() {
			return ErrStaleBallot
		}
		if p.promised != req.Ballot {
			return s.ps.promise(p, req.Ballot)
		}
		return nil
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case errors.Is(err, ErrStaleBallot):
		return AppendReply{Stale: true, Promised: p.promised}, nil
	case err != nil:
		return AppendReply{}, err
	}
	if h, err := s.ps.hashAtLocked(p, req.PrevHeight); err != nil || h != req.PrevHash {
		return AppendReply{}, fmt.Errorf("%w: %q: the snapshot at %d does not match the leader's entry", ErrBadRequest, p.name, req.PrevHeight)
	}
	return AppendReply{Last: p.last}, nil
}

// HandleFetch returns up to limit entries of the log from height from on,
// fewer if they would make too large a message; ErrCompacted if some were
// compacted; ErrNoPartition if this host holds nothing of the partition.
func (s *Service) HandleFetch(partition string, from uint64, limit int) ([]*Tx, error) {
	p, err := s.ps.find(partition)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	last, base := p.last, p.base
	p.mu.Unlock()
	from = max(from, 1)
	if from <= base {
		return nil, fmt.Errorf("%w: %q: entries from %d asked, the log starts after %d", ErrCompacted, partition, from, base)
	}
	if limit > 0 && from <= last && uint64(limit) < last-from+1 {
		last = from + uint64(limit) - 1
	}
	return s.ps.batch(p, from, last)
}

// HandleReadLocal returns this replica's committed state of a record: a
// leader applies its entries before they commit, and those may yet be cut
// from its log. A host that holds nothing of the partition answers
// ErrNoPartition.
func (s *Service) HandleReadLocal(partition, name string) (Record, error) {
	p, err := s.ps.find(partition)
	if err != nil {
		return Record{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return s.ps.recordAt(p, name, min(p.commit, p.applied))
}

// ---- Leader side ----

// establish makes this host the partition's leader. It takes a ballot above
// every one it has seen and gets it promised by a majority of the replica
// set in force (the latest OpConfig of its log; for a partition with none
// yet, the ring's set). It adopts the most advanced log among the repliers
// (highest last ballot, then height); if that log puts another replica set
// in force, it must get a majority of that one too, and so on. Then it
// commits an entry at its ballot, which commits everything before it, and
// moves the replica set one member at a time toward the ring's. p.lead must
// be held.
func (s *Service) establish(ctx context.Context, p *part, ringSet []string) error {
	p.mu.Lock()
	established := !p.leading.IsZero() && p.leading == p.promised
	p.mu.Unlock()
	if established {
		return s.reconfigure(ctx, p, ringSet)
	}
	var lastErr error
	var beyond []string // the hosts a creation asks (beyondSet), once looked up
	for attempt := range 3 {
		p.mu.Lock()
		b := Ballot{N: max(p.promised.N, p.seen.N) + 1, Host: s.cfg.Addr}
		if b.N > maxBallot {
			p.mu.Unlock()
			return fmt.Errorf("%w: %q: no ballot above %s and %s within the ceiling", ErrUnavailable, p.name, p.promised, p.seen)
		}
		self := p.head()
		if err := s.ps.promise(p, b); err != nil {
			p.mu.Unlock()
			return err
		}
		p.mu.Unlock()

		replies := map[string]PrepareReply{s.cfg.Addr: self}
		asked := map[string]bool{s.cfg.Addr: true}
		var members []string
		var higher Ballot
		for round := 0; round < 4; round++ {
			p.mu.Lock()
			cfg := slices.Clone(p.config)
			p.mu.Unlock()
			if cfg == nil {
				cfg = ringSet
			}
			if sameSet(cfg, members) {
				break // the adopted log keeps the set we have a majority of
			}
			members = cfg
			var err error
			if higher, err = s.prepare(ctx, p, b, members, asked, replies); err != nil {
				lastErr = err
			}
			if higher.IsZero() && !created(replies) {
				// A creation needs the ring's set too (see quorumFor), and
				// asks as many hosts after it whether the partition exists
				// already (see beyondSet).
				if beyond == nil {
					beyond = s.beyondSet(ctx, p.name, ringSet)
				}
				if higher, err = s.prepare(ctx, p, b, beyond, asked, replies); err != nil {
					lastErr = err
				}
			}
			if !higher.IsZero() {
				break
			}
			if set, need := s.quorumFor(replies, members, ringSet); countIn(replies, set) < need {
				return fmt.Errorf("%w: %q: %d of replica set %v promised (need %d of %v): %v",
					ErrTakeover, p.name, countIn(replies, members), members, need, set, lastErr)
			}
			best := s.cfg.Addr
			for r, rep := range replies {
				if bb := replies[best]; bb.LastBal.Less(rep.LastBal) || (bb.LastBal == rep.LastBal && bb.Last < rep.Last) {
					best = r
				}
			}
			if best != s.cfg.Addr {
				if err := s.adopt(ctx, p, best, replies[best]); err != nil {
					lastErr = err
					members = nil
					break
				}
				replies[s.cfg.Addr] = replies[best] // our log is now best's
			}
		}
		if !higher.IsZero() {
			p.mu.Lock()
			if p.seen.Less(higher) {
				p.seen = higher // the next attempt goes above it
			}
			p.mu.Unlock()
			lastErr = fmt.Errorf("%w: ballot %s superseded by %s", ErrStaleBallot, b, higher)
			continue
		}
		if members == nil {
			continue
		}
		p.mu.Lock()
		if p.config != nil && !sameSet(p.config, members) {
			// The set kept changing through every round: no majority of the
			// one in force has promised yet.
			p.mu.Unlock()
			lastErr = fmt.Errorf("%w: %q: the replica set kept changing", ErrTakeover, p.name)
			continue
		}
		if p.promised != b {
			p.mu.Unlock()
			lastErr = fmt.Errorf("%w: deposed while taking over", ErrStaleBallot)
			continue
		}
		set, need := s.quorumFor(replies, members, ringSet)
		creating := !created(replies)
		if need := s.creationWidth(); creating && len(members) < need {
			p.mu.Unlock()
			return fmt.Errorf("txlog: %q: will not create the partition on %d replicas %v: the cluster has had %d hosts, and a set of fewer than %d may be one side of a split",
				p.name, len(members), members, s.hosts.Load(), need)
		}
		if still := s.ringStill(); creating && still < s.cfg.CreationSettle {
			p.mu.Unlock()
			return fmt.Errorf("%w: %q: the ring changed %s ago; a partition is created on a ring still for %s, so that its hosts agree on the replica set",
				ErrTakeover, p.name, still.Round(time.Millisecond), s.cfg.CreationSettle)
		}
		p.leading, p.match, p.creators = b, map[string]uint64{}, nil
		if creating {
			p.creators = set
		}
		first := p.config == nil
		// The leader's records reflect its whole log.
		err := s.ps.apply(p, p.last)
		last := p.last
		p.mu.Unlock()
		if err != nil {
			return err
		}
		s.log.Debug("leading partition", "partition", p.name, "ballot", b.String(), "attempt", attempt, "members", members, "last", last)
		// Commit an entry at our ballot: entries of earlier ballots are
		// committed by committing one of ours after them. A new partition's
		// first entry puts the ring's replica set in force.
		op := Op{Kind: OpNoop}
		if first {
			op = configOp(members)
		}
		enough := func(acked map[string]bool) bool { return countSet(acked, set) >= need }
		if _, _, err := s.appendTx(ctx, p, WriteID{}, []Op{op}, union(members, set), enough, enough, true); err != nil {
			if errors.Is(err, ErrUnavailable) {
				// The request this takeover is for has not been appended:
				// it may be tried again (a creation whose member died
				// before it acknowledged succeeds once the ring drops it).
				return fmt.Errorf("%w: %q: the takeover's first entry did not commit: %v", ErrTakeover, p.name, err)
			}
			return err
		}
		p.mu.Lock()
		p.creators = nil // created: the entry just committed is known to every creator
		p.mu.Unlock()
		return s.reconfigure(ctx, p, ringSet)
	}
	return fmt.Errorf("%w: %q: %v", ErrTakeover, p.name, lastErr)
}

// quorumFor returns which hosts a takeover needs to promise and then to
// accept its first entry, and how many of them: a majority of the set in
// force (members), once the partition is known to exist; while it is being
// created, every host of the ring's set for it (ringSet), if that set is at
// least creationWidth wide, else every member.
//
// A partition is known to exist once some replica that answered has
// committed an entry. Until then the set in force comes from no committed
// entry, and two hosts whose views of the ring differ could each create the
// partition with a set of their own. Requiring every member of a set makes
// any two creators whose sets share a host meet at that host, which
// promises only one of them and reports the other's entries to it; a
// majority would not, since majorities of two different sets need not
// meet. A creation still uncommitted when the ring's set for the partition
// changed (a member died, for good, before it took the first entry; a host
// joined) is finished by every host of the new set, as a new creation would
// be: any two creators still meet wherever their sets overlap, and a
// member that will never answer cannot hold the creation up for good. The
// first entry stays the one adopted (it may have been chosen), and the
// leader then moves the set in force to the ring's.
func (s *Service) quorumFor(replies map[string]PrepareReply, members, ringSet []string) ([]string, int) {
	if created(replies) {
		return members, majority(len(members))
	}
	if !sameSet(members, ringSet) && len(ringSet) >= s.creationWidth() {
		return ringSet, len(ringSet)
	}
	return members, len(members)
}

// beyondSet returns the ring's set for a partition and as many hosts
// again after it (ringSet alone if the ring cannot say). Hosts that join
// take the places at the front of a key's successors, so the hosts that
// held a partition before are found further on: when the whole set is new
// (three hosts joined on one arc, and the copies they made before joining
// missed the partition), a creation asked only the set would start the
// partition afresh beside the one that exists, and the writes made to it
// would be lost from sight. The Jepsen harness saw exactly that, after
// joins and replacements: keys read back empty. A reply with a log makes
// the takeover adopt it instead.
func (s *Service) beyondSet(ctx context.Context, partition string, ringSet []string) []string {
	hosts, err := s.placed(ctx, partition, 2*s.cfg.Replicas)
	if err != nil {
		return ringSet
	}
	return union(hosts, ringSet)
}

// union returns a's members, then those of b that a lacks.
func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// created reports whether a replica that answered has committed an entry,
// which proves the partition exists.
func created(replies map[string]PrepareReply) bool {
	for _, r := range replies {
		if r.Commit > 0 {
			return true
		}
	}
	return false
}

// hostsKey is where the service keeps the most hosts it has seen.
var hostsKey = []byte("t/hosts")

func (s *Service) loadHosts() error {
	b, err := s.ps.db.Get(hostsKey)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("txlog: read the cluster's host count: %w", err)
	case len(b) != 8:
		return fmt.Errorf("txlog: cluster's host count: %d bytes stored, want 8", len(b))
	}
	s.hosts.Store(int64(binary.BigEndian.Uint64(b)))
	return nil
}

// NoteHosts tells the service that the cluster has (or had) n hosts, as
// the ring or the remembered peers show. The number only grows, and is
// kept in the store. See creationWidth for what it is for.
func (s *Service) NoteHosts(n int) {
	for {
		cur := s.hosts.Load()
		if int64(n) <= cur {
			return
		}
		if s.hosts.CompareAndSwap(cur, int64(n)) {
			break
		}
	}
	err := s.ps.db.Update(func(w store.Writer) error { return w.Set(hostsKey, binary.BigEndian.AppendUint64(nil, uint64(n))) })
	if err == nil {
		err = s.ps.db.Sync()
	}
	if err != nil {
		s.log.Warn("cannot store the cluster's host count", "n", n, "err", err)
	}
}

// NoteRingChange tells the service that the hosts the ring shows here
// changed. See Config.CreationSettle.
func (s *Service) NoteRingChange() { s.ringChanged.Store(int64(time.Since(s.started))) }

// ringStill returns how long the ring has not changed here.
func (s *Service) ringStill() time.Duration {
	return time.Since(s.started) - time.Duration(s.ringChanged.Load())
}

// creationWidth returns the fewest replicas a new partition may be created
// on: a majority of the hosts the cluster has had, but never more than N.
// When a network split cuts the ring in two, at most one side holds a
// majority of the hosts, and in a cluster of fewer than 2N hosts only that
// side forms sets that wide, so the two sides cannot both create the same
// partition.
func (s *Service) creationWidth() int {
	return min(s.cfg.Replicas, majority(int(s.hosts.Load())))
}

// reconfigure moves the replica set in force toward the ring's, one member
// at a time (add before remove), so that any majority of one set meets any
// majority of the next. Each step is an OpConfig committed by majorities of
// both the old and the new set. A step that cannot commit leaves the set as
// it is; the partition keeps working with it. p.lead must be held.
func (s *Service) reconfigure(ctx context.Context, p *part, ringSet []string) error {
	for range 2 * len(ringSet) {
		p.mu.Lock()
		cur := slices.Clone(p.config)
		p.mu.Unlock()
		next := NextConfig(cur, ringSet, s.cfg.Replicas)
		if next == nil {
			return nil
		}
		if _, err := s.appendConfig(ctx, p, cur, next); err != nil {
			s.log.Warn("replica set change failed", "partition", p.name, "from", cur, "to", next, "err", err)
			return nil
		}
		s.log.Debug("replica set changed", "partition", p.name, "from", cur, "to", next)
	}
	return nil
}

// NextConfig returns the set one step from cur toward want: cur with a
// member of want added, or else with a member not in want removed; nil if
// they hold the same members. While the ring names fewer than n hosts (a
// cluster restarting, or a host gone before the ring names another), it
// only adds: a member that is away keeps its place, so that the set does
// not shrink and one more failure does not cost its majority.
func NextConfig(cur, want []string, n int) []string {
	for _, w := range want {
		if !slices.Contains(cur, w) {
			return append(slices.Clone(cur), w)
		}
	}
	if len(want) < n {
		return nil
	}
	for i, c := range cur {
		if !slices.Contains(want, c) {
			return slices.Delete(slices.Clone(cur), i, i+1)
		}
	}
	return nil
}

// adopt replaces this host's uncommitted log with the more advanced one of
// the replica best, fetched from this host's commit point on.
func (s *Service) adopt(ctx context.Context, p *part, best string, head PrepareReply) error {
	p.mu.Lock()
	from := p.commit + 1
	p.mu.Unlock()
	from, txs, err := s.fetchLog(ctx, p, best, from, head.Last, func() error { return nil })
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	prev, err := s.ps.hashAtLocked(p, from-1)
	if err != nil {
		return err
	}
	for i, t := range txs {
		if t.Height != from+uint64(i) || t.Prev != prev {
			return fmt.Errorf("txlog: %q: the log fetched from %s does not chain at %d", p.name, best, t.Height)
		}
		prev = t.Hash()
	}
	if len(txs) > 0 && prev != head.LastHash {
		return fmt.Errorf("txlog: %q: the log fetched from %s ends in another hash than it announced", p.name, best)
	}
	return s.ps.write(p, from, txs, p.promised, p.commit, p.applied, true)
}

// fetchLog fetches p's entries from height from up to to from the replica
// addr, in batches. If addr has compacted entries this host lacks, it
// installs addr's snapshot first (vetted by ok, see installFrom) and
// fetches the entries after it. It returns the height the entries start
// at, and the entries, for the caller to check and write.
func (s *Service) fetchLog(ctx context.Context, p *part, addr string, from, to uint64, ok func() error) (uint64, []*Tx, error) {
	var txs []*Tx
	for h := from; h <= to; {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
		batch, err := s.tr.Fetch(cctx, addr, p.name, h, batchEntries)
		cancel()
		if errors.Is(err, ErrCompacted) && len(txs) == 0 {
			c, err := s.installFrom(ctx, p, addr, 0, ok)
			if err != nil {
				return 0, nil, err
			}
			if c < from {
				return 0, nil, fmt.Errorf("%w: %q: %s compacted past its snapshot", ErrUnavailable, p.name, addr)
			}
			from, h = c+1, c+1
			continue
		}
		if err != nil {
			return 0, nil, fmt.Errorf("txlog: %q: fetch the log from %s: %w", p.name, addr, err)
		}
		if len(batch) == 0 {
			break
		}
		for _, t := range batch {
			if t.Height <= to {
				txs = append(txs, t)
			}
		}
		h += uint64(len(batch))
	}
	return from, txs, nil
}

// appendAndReplicate appends a transaction of ops made by the write id at
// the leader's ballot, replicates it to the replica set in force and waits
// for the replicas the level requires. It returns the transaction. p.lead
// must be held and the host must be leading.
func (s *Service) appendAndReplicate(ctx context.Context, p *part, id WriteID, ops []Op, lv level.Level) (*Tx, error) {
	p.mu.Lock()
	members := slices.Clone(p.config)
	p.mu.Unlock()
	if members == nil {
		members = ops[0].members() // the first entry of a partition sets them
	}
	need, quorum := levelNeeds(lv, s.cfg.Addr, members)
	t, acked, err := s.appendTx(ctx, p, id, ops, members, need, quorum, lv != level.Lazy)
	return t, s.shortfall(p, lv, members, acked, quorum, err)
}

// reaffirm brings the replicas a write at level requires up to t, a
// transaction of the leader's log that an earlier attempt of the same
// write made. p.lead must be held and the host must be leading.
func (s *Service) reaffirm(ctx context.Context, p *part, t *Tx, lv level.Level) error {
	p.mu.Lock()
	members := slices.Clone(p.config)
	p.mu.Unlock()
	need, quorum := levelNeeds(lv, s.cfg.Addr, members)
	acked, err := s.replicate(ctx, p, members, t.Height, need, func() error { return s.ps.syncTo(p, t) })
	switch {
	case need(acked):
		err = nil
	case !errors.Is(err, ErrStaleBallot):
		err = fmt.Errorf("%w: %q: %d of %d replicas hold it: %v", ErrUnavailable, p.name, countSet(acked, members), len(members), err)
	}
	return s.shortfall(p, lv, members, acked, quorum, err)
}

// levelNeeds returns what a write at level needs of the replicas that
// acknowledge it (self, the leader, among them once its own copy is
// durable), and what makes it committed, given the set members. Lazy
// needs nothing.
func levelNeeds(lv level.Level, self string, members []string) (need, quorum func(map[string]bool) bool) {
	quorum = func(acked map[string]bool) bool { return countSet(acked, members) >= majority(len(members)) }
	switch lv {
	case level.All:
		return func(acked map[string]bool) bool { return countSet(acked, members) == len(members) }, quorum
	case level.Leader:
		return func(acked map[string]bool) bool { return acked[self] }, quorum
	case level.Lazy:
		return func(map[string]bool) bool { return true }, quorum
	}
	return quorum, quorum
}

// shortfall returns the error of a write at level that members acked
// (err being the replication's error): a write at all that only a quorum
// holds, or that a set short of hosts holds, is committed but short.
func (s *Service) shortfall(p *part, lv level.Level, members []string, acked map[string]bool, quorum func(map[string]bool) bool, err error) error {
	switch {
	case err != nil && lv == level.All && quorum(acked):
		return fmt.Errorf("%w: %q: level all: only %d of the %d replicas have it: %v",
			ErrCommittedShort, p.name, countSet(acked, members), len(members), err)
	case err != nil:
		return err
	case lv == level.All && len(members) < s.cfg.Replicas:
		return fmt.Errorf("%w: %q: level all: every member of the replica set has it, but the set has %d of the %d replicas (a host is missing)",
			ErrCommittedShort, p.name, len(members), s.cfg.Replicas)
	}
	return nil
}

// appendConfig commits an OpConfig changing the replica set from cur to
// next, acknowledged by majorities of both.
func (s *Service) appendConfig(ctx context.Context, p *part, cur, next []string) (*Tx, error) {
	need := func(acked map[string]bool) bool {
		return countSet(acked, cur) >= majority(len(cur)) && countSet(acked, next) >= majority(len(next))
	}
	p.mu.Lock()
	p.joint = cur
	p.mu.Unlock()
	t, _, err := s.appendTx(ctx, p, WriteID{}, []Op{configOp(next)}, union(cur, next), need, need, true)
	p.mu.Lock()
	p.joint = nil
	p.mu.Unlock()
	return t, err
}

// appendTx appends a transaction, replicates it to targets and waits until
// enough holds for the replicas that acknowledged it (this host included).
// When that never happens it fails, and unless keep holds (the entry still
// committed) the leader steps down, so that the next request settles the
// log anew.
func (s *Service) appendTx(ctx context.Context, p *part, id WriteID, ops []Op, targets []string, enough, keep func(map[string]bool) bool, sync bool) (*Tx, map[string]bool, error) {
	p.mu.Lock()
	if p.leading.IsZero() || p.leading != p.promised {
		p.mu.Unlock()
		return nil, nil, fmt.Errorf("%w: %q: no longer leading", ErrStaleBallot, p.name)
	}
	t := &Tx{Partition: p.name, Height: p.last + 1, Prev: p.lastHash, Ballot: p.leading, Time: s.cfg.Clock().UnixNano(), ID: id, Ops: ops}
	// The entry goes to disk here while it goes to the followers: this
	// host counts among the replicas holding it once it is synced.
	err := s.ps.write(p, t.Height, []*Tx{t}, p.promised, p.commit, t.Height, false)
	p.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	self := held
	if sync {
		self = func() error { return s.ps.syncTo(p, t) }
	}
	acked, err := s.replicate(ctx, p, targets, t.Height, enough, self)
	if acked[s.cfg.Addr] {
		// The transaction must still be in this host's log where it was put.
		p.mu.Lock()
		if h, herr := s.ps.hashAtLocked(p, t.Height); herr != nil || h != t.Hash() {
			delete(acked, s.cfg.Addr)
		}
		p.mu.Unlock()
	}
	if enough(acked) {
		// With no follower to answer (a set of one), nothing else moves the
		// commit point.
		s.advance(p, s.cfg.Addr, t.Ballot, t.Height)
		s.log.Debug("committed", "partition", p.name, "height", t.Height, "hash", t.Hash().String()[:8], "ballot", t.Ballot.String(), "acked", acked, "targets", targets)
		return t, acked, nil
	}
	if errors.Is(err, ErrStaleBallot) || !keep(acked) {
		p.mu.Lock()
		p.leading = Ballot{}
		p.mu.Unlock()
	}
	if errors.Is(err, ErrStaleBallot) {
		return nil, acked, err
	}
	msg := fmt.Sprintf("%q: %d of %d replicas acknowledged", p.name, len(acked), len(targets))
	if err != nil {
		msg += ": " + err.Error()
	}
	return nil, acked, fmt.Errorf("%w: %s", ErrUnavailable, msg)
}

// replicate brings the logs of targets up to height target and returns the
// replicas that hold it (this host included once self, run meanwhile, has
// made its own log hold it) as soon as enough says so, or when every
// target has answered or failed. Followers still catching up when it
// returns go on in the background.
func (s *Service) replicate(ctx context.Context, p *part, targets []string, target uint64, enough func(map[string]bool) bool, self func() error) (map[string]bool, error) {
	type result struct {
		addr string
		err  error
	}
	p.mu.Lock()
	ballot := p.leading
	p.mu.Unlock()
	results := make(chan result, len(targets)+1)
	n := 1
	go func() { results <- result{s.cfg.Addr, self()} }()
	for _, r := range targets {
		if r == s.cfg.Addr {
			continue
		}
		n++
		go func() {
			// A follower's catch-up outlives a call that returns early.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*s.cfg.CallTimeout)
			defer cancel()
			results <- result{r, s.push(rctx, p, r, target)}
		}()
	}
	acked := map[string]bool{}
	var lastErr error
	for range n {
		if enough(acked) {
			break
		}
		res := <-results
		if res.err != nil {
			lastErr = res.err
			continue
		}
		acked[res.addr] = true
	}
	// This host counts only if it still holds its ballot: a host that has
	// since promised a higher one may be in that leader's majority too.
	p.mu.Lock()
	if ballot.IsZero() || p.leading != ballot || p.promised != ballot {
		delete(acked, s.cfg.Addr)
		lastErr = fmt.Errorf("%w: %q: deposed while replicating", ErrStaleBallot, p.name)
	}
	p.mu.Unlock()
	return acked, lastErr
}

// held is replicate's self for a leader whose log already holds what it
// replicates.
func held() error { return nil }

// countSet counts the members of set in acked.
func countSet(acked map[string]bool, set []string) int {
	n := 0
	for _, m := range set {
		if acked[m] {
			n++
		}
	}
	return n
}

// push sends a follower the entries it lacks up to target, backing up along
// the hash chain until its log matches, then advances the commit point.
func (s *Service) push(ctx context.Context, p *part, to string, target uint64) error {
	p.mu.Lock()
	ballot := p.leading
	next, known := p.match[to]
	if !known || next == 0 {
		next = target // optimistic: only the newest entry
	} else {
		next++
	}
	p.mu.Unlock()
	for {
		if s.ps.closed.Load() {
			return errClosed
		}
		// The entries, the hash before them and the commit point are read
		// together, while this host still leads at ballot: a host deposed
		// meanwhile may have taken another leader's log and commit point,
		// and an entry of its own old log sent with that commit point would
		// be taken as committed by the follower.
		p.mu.Lock()
		if ballot.IsZero() || p.leading != ballot {
			p.mu.Unlock()
			return fmt.Errorf("%w: %q: no longer leading", ErrStaleBallot, p.name)
		}
		if next <= p.base {
			// The follower needs entries compacted here: it installs the
			// snapshot at the base instead, and gets the entries above it
			// as entries. The base covers only entries older than the
			// retention, so every write younger than that reaches the
			// follower with its ID, which keeps it from being applied
			// twice (see written).
			base := p.base
			hash, err := s.ps.hashAtLocked(p, base)
			p.mu.Unlock()
			if err != nil {
				return err
			}
			if err := s.pushSnapshot(ctx, p, to, ballot, base, hash); err != nil {
				return err
			}
			if base >= target {
				return nil
			}
			next = base + 1
			continue
		}
		prevHash, err := s.ps.hashAtLocked(p, next-1)
		var txs []*Tx
		if err == nil {
			txs, err = s.ps.batch(p, next, target)
		}
		commit := p.commit
		p.mu.Unlock()
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
		rep, err := s.tr.Append(cctx, to, AppendRequest{Partition: p.name, Ballot: ballot, PrevHeight: next - 1, PrevHash: prevHash, Txs: txs, Commit: commit})
		cancel()
		switch {
		case err != nil:
			return err
		case rep.Stale:
			return s.deposed(p, ballot, to, rep.Promised)
		case rep.Mismatch:
			next = min(next-1, rep.Last+1)
			if next == 0 {
				next = 1
			}
			continue
		}
		matched := next - 1 + uint64(len(txs))
		s.advance(p, to, ballot, matched)
		if matched >= target {
			return nil
		}
		next = matched + 1
	}
}

// pushSnapshot has follower to install this host's snapshot at height at
// (committed), entry hash.
func (s *Service) pushSnapshot(ctx context.Context, p *part, to string, ballot Ballot, at uint64, hash Hash) error {
	// Fetching the snapshot takes the follower more than one call.
	cctx, cancel := context.WithTimeout(ctx, 10*s.cfg.CallTimeout)
	rep, err := s.tr.Append(cctx, to, AppendRequest{Partition: p.name, Ballot: ballot, PrevHeight: at, PrevHash: hash, Commit: at, Install: true})
	cancel()
	switch {
	case err != nil:
		return err
	case rep.Stale:
		return s.deposed(p, ballot, to, rep.Promised)
	}
	s.advance(p, to, ballot, at)
	return nil
}

// deposed steps down from ballot, which follower to refused for the higher
// one promised.
func (s *Service) deposed(p *part, ballot Ballot, to string, promised Ballot) error {
	p.mu.Lock()
	if p.leading == ballot {
		p.leading = Ballot{}
	}
	if p.seen.Less(promised) {
		p.seen = promised // to beat, should this host take over again
	}
	p.mu.Unlock()
	return fmt.Errorf("%w: %s promised %s", ErrStaleBallot, to, promised)
}

// advance records that follower to's log matches the leader's up to h, and
// moves the commit point to the highest entry of the leader's own ballot
// that a majority holds.
func (s *Service) advance(p *part, to string, ballot Ballot, h uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.leading != ballot {
		return
	}
	if h > p.match[to] {
		p.match[to] = h
	}
	c := p.majorityMatch(s.cfg.Addr, p.config)
	if p.creators != nil {
		c = p.allMatch(s.cfg.Addr, p.creators)
	}
	if p.joint != nil {
		c = min(c, p.majorityMatch(s.cfg.Addr, p.joint))
	}
	if c <= p.commit {
		return
	}
	// Only an entry of our own ballot commits by counting (it commits all
	// before it); the no-op every new leader appends makes that prompt.
	if t, err := s.ps.entry(p, c); err != nil || t.Ballot != ballot {
		return
	}
	p.commit = c
}

// prepare asks the members of targets not asked yet to promise ballot b,
// adding successful replies to replies.
// It returns the highest ballot a refusal named, if any.
func (s *Service) prepare(ctx context.Context, p *part, b Ballot, targets []string, asked map[string]bool, replies map[string]PrepareReply) (Ballot, error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var higher Ballot
	var lastErr error
	for _, r := range targets {
		if asked[r] {
			continue
		}
		asked[r] = true
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
			defer cancel()
			rep, err := s.tr.Prepare(cctx, r, p.name, b)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				lastErr = err
			case !rep.OK:
				if higher.Less(rep.Promised) {
					higher = rep.Promised
				}
			default:
				replies[r] = rep
			}
		})
	}
	wg.Wait()
	return higher, lastErr
}

// countIn counts the replies from members of set.
func countIn(replies map[string]PrepareReply, set []string) int {
	n := 0
	for _, r := range set {
		if _, ok := replies[r]; ok {
			n++
		}
	}
	return n
}

// sameSet reports whether a and b hold the same members.
func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// allMatch returns the highest height that every member of set holds, by
// the leader's (self's) knowledge. p.mu must be held.
func (p *part) allMatch(self string, set []string) uint64 {
	h := p.last
	for _, r := range set {
		if r != self {
			h = min(h, p.match[r])
		}
	}
	return min(h, p.durable)
}

// majorityMatch returns the highest height that a majority of set holds,
// by the leader's (self's) knowledge. p.mu must be held.
func (p *part) majorityMatch(self string, set []string) uint64 {
	heights := make([]uint64, 0, len(set))
	for _, r := range set {
		if r == self {
			heights = append(heights, min(p.last, p.durable))
		} else {
			heights = append(heights, p.match[r])
		}
	}
	slices.Sort(heights)
	slices.Reverse(heights)
	return heights[majority(len(set))-1]
}
