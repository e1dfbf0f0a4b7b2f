package txlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/difuse/difuse/ring"
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
	// Logger receives leadership changes; nil discards them.
	Logger *slog.Logger
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
	clock  func() time.Time
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
	if cfg.MaxValueBytes == 0 {
		cfg.MaxValueBytes = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, placer: placer, tr: tr, ps: &parts{db: db, m: map[string]*part{}}, log: cfg.Logger, clock: time.Now}, nil
}

// Close stops the service from changing its store: every later write,
// promise or apply fails, and leader work in the background stops at its
// next step. Call it before closing the store, or to simulate a process
// that dies.
func (s *Service) Close() { s.ps.closed.Store(true) }

// majority returns the size of a majority of n replicas.
func majority(n int) int { return n/2 + 1 }

// ---- Replica side ----

// HandlePrepare promises ballot b for the partition unless a higher one was
// promised, and reports the replica's log head.
func (s *Service) HandlePrepare(partition string, b Ballot, conf []string) (PrepareReply, error) {
	p, err := s.ps.get(partition)
	if err != nil {
		return PrepareReply{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if b.Less(p.promised) {
		return PrepareReply{Promised: p.promised}, nil
	}
	reply := p.head()
	if b != p.promised {
		if err := s.ps.promise(p, b, conf); err != nil {
			return PrepareReply{}, err
		}
	}
	reply.Promised = b
	return reply, nil
}

// head reports the replica's log head and last known configuration, as a
// successful PrepareReply. p.mu must be held.
func (p *part) head() PrepareReply {
	return PrepareReply{OK: true, Last: p.last, LastHash: p.lastHash, LastBal: p.lastBal, Commit: p.commit,
		Conf: slices.Clone(p.conf), ConfBal: p.confBal, PConf: slices.Clone(p.pconf), PConfBal: p.pconfBal}
}

// HandleAppend accepts a leader's entries if its ballot is not stale and
// the entries follow the replica's log, syncing them before it answers.
func (s *Service) HandleAppend(req AppendRequest) (AppendReply, error) {
	p, err := s.ps.get(req.Partition)
	if err != nil {
		return AppendReply{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if req.Ballot.Less(p.promised) {
		return AppendReply{Stale: true, Promised: p.promised}, nil
	}
	if req.PrevHeight > p.last {
		return AppendReply{Mismatch: true, Last: p.last}, nil
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
	if err := s.ps.write(p, req.PrevHeight+1, req.Txs, req.Ballot, req.Conf, commit, commit, true); err != nil {
		return AppendReply{}, err
	}
	return AppendReply{Last: p.last}, nil
}

// HandleFetch returns up to max entries of the log from height from on.
func (s *Service) HandleFetch(partition string, from uint64, max int) ([]*Tx, error) {
	p, err := s.ps.get(partition)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	last := p.last
	p.mu.Unlock()
	var out []*Tx
	for h := max64(from, 1); h <= last && len(out) < max; h++ {
		t, err := s.ps.entry(p, h)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// HandleReadLocal returns this replica's committed state of a record.
func (s *Service) HandleReadLocal(partition, name string) (Record, error) {
	p, err := s.ps.get(partition)
	if err != nil {
		return Record{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return s.ps.record(p, name)
}

// ---- Leader side ----

// establish makes this host the partition's leader for the replica set:
// it takes a ballot above every one it has seen, gets a majority to promise
// it, adopts the most advanced log among them (highest last ballot, then
// height), and commits a no-op at its ballot, which commits everything
// before it. p.lead must be held.
func (s *Service) establish(ctx context.Context, p *part, replicas []string) error {
	p.mu.Lock()
	if !p.leading.IsZero() && p.leading == p.promised && slices.Equal(p.replicas, replicas) {
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	var lastErr error
	for attempt := range 3 {
		p.mu.Lock()
		b := Ballot{N: p.promised.N + 1, Host: s.cfg.Addr}
		self := p.head()
		if err := s.ps.promise(p, b, nil); err != nil {
			p.mu.Unlock()
			return err
		}
		p.mu.Unlock()

		// Promises from a majority of the replica set, and of the replica
		// set of the newest leader any of them promised before, until that
		// set is covered too: a leader of an earlier replica set may have
		// committed entries only its members hold.
		replies := map[string]PrepareReply{s.cfg.Addr: self}
		asked := map[string]bool{s.cfg.Addr: true}
		confs := [][]string{replicas}
		var higher Ballot
		ok := true
		for i := 0; i < len(confs) && ok && higher.IsZero(); i++ {
			var err error
			if higher, err = s.prepare(ctx, p, b, replicas, confs[i], asked, replies); err != nil {
				lastErr = err
			}
			if !higher.IsZero() {
				break
			}
			if n := countIn(replies, confs[i]); n < majority(len(confs[i])) {
				ok = false
				lastErr = fmt.Errorf("%w: %q: %d of replica set %v promised (need %d): %v",
					ErrUnavailable, p.name, n, confs[i], majority(len(confs[i])), lastErr)
				break
			}
			for _, prev := range newestConfs(replies, b) {
				if !slices.ContainsFunc(confs, func(c []string) bool { return sameSet(c, prev) }) {
					confs = append(confs, prev)
				}
			}
		}
		if !higher.IsZero() {
			p.mu.Lock()
			if p.promised.Less(higher) {
				p.promised.N = higher.N // the next attempt goes above it
			}
			p.mu.Unlock()
			lastErr = fmt.Errorf("%w: ballot %s superseded by %s", ErrStaleBallot, b, higher)
			continue
		}
		if !ok {
			return lastErr
		}
		best := s.cfg.Addr
		for r, rep := range replies {
			if b := replies[best]; b.LastBal.Less(rep.LastBal) || (b.LastBal == rep.LastBal && b.Last < rep.Last) {
				best = r
			}
		}
		if best != s.cfg.Addr {
			if err := s.adopt(ctx, p, best, replies[best]); err != nil {
				lastErr = err
				continue
			}
		}
		p.mu.Lock()
		if p.promised != b {
			p.mu.Unlock()
			lastErr = fmt.Errorf("%w: deposed while taking over", ErrStaleBallot)
			continue
		}
		p.leading, p.replicas, p.match = b, slices.Clone(replicas), map[string]uint64{}
		// The leader's records reflect its whole log.
		err := s.ps.apply(p, p.last)
		p.mu.Unlock()
		if err != nil {
			return err
		}
		s.log.Info("leading partition", "partition", p.name, "ballot", b.String(), "attempt", attempt, "replicas", replicas, "confs", confs, "best", best, "last", p.last)
		// Commit a no-op at our ballot: entries of earlier ballots are
		// committed by committing one of ours after them.
		if _, err := s.appendAndReplicate(ctx, p, []Op{{Kind: OpNoop}}, Quorum); err != nil {
			return err
		}
		return nil
	}
	return fmt.Errorf("%w: %q: could not take over: %v", ErrUnavailable, p.name, lastErr)
}

// adopt replaces this host's uncommitted log with the more advanced one of
// the replica best, fetched from this host's commit point on.
func (s *Service) adopt(ctx context.Context, p *part, best string, head PrepareReply) error {
	p.mu.Lock()
	from := p.commit + 1
	p.mu.Unlock()
	var txs []*Tx
	for h := from; h <= head.Last; {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
		batch, err := s.tr.Fetch(cctx, best, p.name, h, 256)
		cancel()
		if err != nil {
			return fmt.Errorf("txlog: %q: fetch the log from %s: %w", p.name, best, err)
		}
		if len(batch) == 0 {
			break
		}
		txs = append(txs, batch...)
		h += uint64(len(batch))
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
	return s.ps.write(p, from, txs, p.promised, nil, p.commit, p.applied, true)
}

// appendAndReplicate appends a transaction of ops at the leader's ballot,
// replicates it and waits for the replicas the level requires. It returns
// the transaction. p.lead must be held and the host must be leading.
func (s *Service) appendAndReplicate(ctx context.Context, p *part, ops []Op, level Level) (*Tx, error) {
	p.mu.Lock()
	if p.leading.IsZero() || p.leading != p.promised {
		p.mu.Unlock()
		return nil, fmt.Errorf("%w: %q: no longer leading", ErrStaleBallot, p.name)
	}
	t := &Tx{Partition: p.name, Height: p.last + 1, Prev: p.lastHash, Ballot: p.leading, Time: s.clock().UnixNano(), Ops: ops}
	err := s.ps.write(p, t.Height, []*Tx{t}, p.promised, p.replicas, p.commit, t.Height, level != Lazy)
	replicas := p.replicas
	p.mu.Unlock()
	if err != nil {
		return nil, err
	}
	need := majority(len(replicas))
	switch level {
	case All:
		need = s.cfg.Replicas // every configured replica, not just those the ring shows now
	case Leader:
		need = 1
	}
	acked, err := s.replicate(ctx, p, replicas, t.Height, need)
	if acked >= need {
		s.log.Debug("committed", "partition", p.name, "height", t.Height, "ballot", t.Ballot.String(), "acked", acked, "replicas", replicas, "ops", len(ops))
		return t, nil
	}
	if level == All && acked >= majority(len(replicas)) {
		return nil, fmt.Errorf("%w: %q: level all: %d of %d replicas have it (the ring shows %d live); it is committed, but not everywhere: %v",
			ErrUnavailable, p.name, acked, s.cfg.Replicas, len(replicas), err)
	}
	// Too few replicas: step down, so the next request settles the log anew.
	p.mu.Lock()
	p.leading = Ballot{}
	p.mu.Unlock()
	if errors.Is(err, ErrStaleBallot) {
		return nil, err
	}
	return nil, fmt.Errorf("%w: %q: %d of %d replicas acknowledged (need %d): %v", ErrUnavailable, p.name, acked, len(replicas), need, err)
}

// replicate brings every follower's log up to height target and returns as
// soon as need replicas (this host included) hold it, or when every
// follower has answered or failed. Followers still catching up when it
// returns go on in the background. Each follower that reaches target counts
// toward the commit point.
func (s *Service) replicate(ctx context.Context, p *part, replicas []string, target uint64, need int) (int, error) {
	type result struct {
		addr string
		err  error
	}
	results := make(chan result, len(replicas))
	n := 0
	for _, r := range replicas {
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
	acked := 1
	var lastErr error
	for range n {
		if acked >= need {
			break
		}
		res := <-results
		if res.err != nil {
			lastErr = res.err
			continue
		}
		acked++
	}
	return acked, lastErr
}

// push sends a follower the entries it lacks up to target, backing up along
// the hash chain until its log matches, then advances the commit point.
func (s *Service) push(ctx context.Context, p *part, to string, target uint64) error {
	p.mu.Lock()
	ballot, conf := p.leading, p.replicas
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
		prevHash, err := s.ps.hashAt(p, next-1)
		if err != nil {
			return err
		}
		var txs []*Tx
		for h := next; h <= target && len(txs) < 256; h++ {
			t, err := s.ps.entry(p, h)
			if err != nil {
				return err
			}
			txs = append(txs, t)
		}
		p.mu.Lock()
		commit := p.commit
		p.mu.Unlock()
		cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
		rep, err := s.tr.Append(cctx, to, AppendRequest{Partition: p.name, Ballot: ballot, Conf: conf, PrevHeight: next - 1, PrevHash: prevHash, Txs: txs, Commit: commit})
		cancel()
		switch {
		case err != nil:
			return err
		case rep.Stale:
			p.mu.Lock()
			if p.leading == ballot {
				p.leading = Ballot{}
			}
			if p.promised.Less(rep.Promised) {
				p.promised.N = rep.Promised.N
			}
			p.mu.Unlock()
			return fmt.Errorf("%w: %s promised %s", ErrStaleBallot, to, rep.Promised)
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
	heights := []uint64{p.last}
	for _, r := range p.replicas {
		if r != s.cfg.Addr {
			heights = append(heights, p.match[r])
		}
	}
	slices.Sort(heights)
	slices.Reverse(heights)
	c := heights[majority(len(p.replicas))-1]
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

// prepare asks the members of targets not asked yet to promise ballot b
// for a leader of replica set conf, adding successful replies to replies.
// It returns the highest ballot a refusal named, if any.
func (s *Service) prepare(ctx context.Context, p *part, b Ballot, conf, targets []string, asked map[string]bool, replies map[string]PrepareReply) (Ballot, error) {
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
			rep, err := s.tr.Prepare(cctx, r, p.name, b, conf)
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

// newestConfs returns the replica sets of the newest leader below b whose
// entries a replier accepted, and of the newest one a replier promised.
func newestConfs(replies map[string]PrepareReply, b Ballot) [][]string {
	var acc, prom []string
	var accBal, promBal Ballot
	for _, r := range replies {
		if len(r.Conf) > 0 && r.ConfBal.Less(b) && accBal.Less(r.ConfBal) {
			acc, accBal = r.Conf, r.ConfBal
		}
		if len(r.PConf) > 0 && r.PConfBal.Less(b) && promBal.Less(r.PConfBal) {
			prom, promBal = r.PConf, r.PConfBal
		}
	}
	var out [][]string
	for _, c := range [][]string{acc, prom} {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
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
