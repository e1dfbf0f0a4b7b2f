// Package heal keeps every partition and every block on the N hosts the
// ring names for it. A Healer runs on each node: in passes at a bounded
// rate it compares per-arc digests of what it holds with the other
// replicas of each arc of the ring (anti-entropy), hands what a replica
// lacks to it (a block is sent, a partition is synced by its leader), hands
// off and then drops what the ring no longer places on this host, and
// re-hashes its blocks to find damaged copies (scrubbing). A host that
// leaves hands off everything it holds before it goes.
package heal

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/nodestatus"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/txlog"
)

// Kind says which items a digest or a listing is about.
type Kind uint8

// Kinds of items.
const (
	KindPartition Kind = 1
	KindBlock     Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindPartition:
		return "partitions"
	case KindBlock:
		return "blocks"
	}
	return fmt.Sprintf("kind %d", k)
}

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool { return k == KindPartition || k == KindBlock }

// Item is one thing a host holds: a partition, Key its name and Digest the
// hash of its log's head; or a block, Key and Digest both its hash.
type Item struct {
	Key    string
	Digest [32]byte
}

// Arc is the stretch of the ring after Lo up to and including Hi: the keys
// a vnode (Hi) leads. Lo == Hi is the whole ring.
type Arc struct{ Lo, Hi ring.ID }

// Contains reports whether position x lies on the arc.
func (a Arc) Contains(x ring.ID) bool {
	switch c := a.Lo.Cmp(a.Hi); {
	case c == 0:
		return true
	case c < 0:
		return a.Lo.Cmp(x) < 0 && x.Cmp(a.Hi) <= 0
	default: // wraps past zero
		return a.Lo.Cmp(x) < 0 || x.Cmp(a.Hi) <= 0
	}
}

// Digest summarises the items a host holds on one arc: their number and
// the XOR of the SHA-256 of each item's key and digest. Two hosts holding
// the same items in the same versions have the same digest.
type Digest struct {
	Count uint64
	Sum   [32]byte
}

func (d *Digest) add(it Item) {
	h := sha256.New()
	h.Write([]byte(it.Key))
	h.Write(it.Digest[:])
	var s [32]byte
	h.Sum(s[:0])
	for i := range s {
		d.Sum[i] ^= s[i]
	}
	d.Count++
}

// Logs is the transaction-log service as healing uses it
// (*txlog.Service).
type Logs interface {
	Partitions(fn func(txlog.Held) error) error
	Sync(ctx context.Context, partition, leader string) (txlog.Response, error)
	Seed(ctx context.Context, partition, leader string) error
	Drop(partition string) error
}

// Blocks is the block service as healing uses it (*blockstore.Service).
type Blocks interface {
	Local() *blockstore.Local
	Get(ctx context.Context, h blockstore.Hash, l level.Level) ([]byte, error)
}

// BlockTransport reaches other hosts' block stores (blockrpc.Transport).
type BlockTransport interface {
	Has(ctx context.Context, to string, hashes []blockstore.Hash, touch bool) ([]bool, error)
	Put(ctx context.Context, to string, h blockstore.Hash, data []byte, sync bool) error
	Get(ctx context.Context, from string, h blockstore.Hash) ([]byte, error)
}

// Peers reaches other hosts' healers.
type Peers interface {
	// Digests returns the host's digest of each arc.
	Digests(ctx context.Context, to string, kind Kind, arcs []Arc) ([]Digest, error)
	// Items lists the host's items on an arc in key order after after, at
	// most limit, and whether more follow.
	Items(ctx context.Context, to string, kind Kind, arc Arc, after string, limit int) ([]Item, bool, error)
}

// Placer names a key's replica set as the ring does (*ring.Host).
type Placer interface {
	Lookup(ctx context.Context, key ring.ID, n int) (ring.Result, error)
}

// Config configures a Healer.
type Config struct {
	// Addr is this host's address as the ring names it. Required.
	Addr string
	// Replicas is N. Default 3.
	Replicas int
	// Interval is the pause between passes. Default 30 s.
	Interval time.Duration
	// Grace is how long a host may be gone from the ring before the data it
	// held is copied elsewhere: until then passes wait, so that a restart
	// costs no copying. Default 5 minutes.
	Grace time.Duration
	// BytesPerSecond bounds the block bytes a pass sends. Default 64 MiB/s.
	BytesPerSecond int
	// SyncsPerSecond bounds the partitions a pass syncs. Default 200.
	SyncsPerSecond int
	// ScrubBytes is how many bytes of blocks each pass re-hashes, going
	// round the store. Default 256 MiB; NoScrub turns scrubbing off.
	ScrubBytes int64
	// LeftAt, if set, returns when the ring last heard that the host at
	// addr left it gracefully (ring.Host.LeftAt): passes do not wait for a
	// host that left within the grace time, as it hands its data off.
	LeftAt func(addr string) time.Time
	// CallTimeout bounds one call to another host. Default 10 s.
	CallTimeout time.Duration
	// Logger receives repairs; nil discards them.
	Logger *slog.Logger
}

// NoScrub is the Config.ScrubBytes of a healer that scrubs nothing.
const NoScrub int64 = -1

// validate fills in the defaults and checks the configuration.
func (c *Config) validate() error {
	if c.Replicas == 0 {
		c.Replicas = 3
	}
	if c.Interval == 0 {
		c.Interval = 30 * time.Second
	}
	if c.Grace == 0 {
		c.Grace = 5 * time.Minute
	}
	if c.BytesPerSecond == 0 {
		c.BytesPerSecond = 64 << 20
	}
	if c.SyncsPerSecond == 0 {
		c.SyncsPerSecond = 200
	}
	if c.ScrubBytes == 0 {
		c.ScrubBytes = 256 << 20
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.Addr == "":
		return errors.New("heal: Config.Addr is required")
	case c.Replicas < 1:
		return fmt.Errorf("heal: Config.Replicas %d must be at least 1", c.Replicas)
	case c.Interval < 0 || c.Grace < 0 || c.CallTimeout < 0:
		return fmt.Errorf("heal: Config.Interval %s, Grace %s and CallTimeout %s must be positive", c.Interval, c.Grace, c.CallTimeout)
	case c.BytesPerSecond < 0 || c.SyncsPerSecond < 0:
		return fmt.Errorf("heal: Config.BytesPerSecond %d and SyncsPerSecond %d must be positive", c.BytesPerSecond, c.SyncsPerSecond)
	case c.ScrubBytes < 0 && c.ScrubBytes != NoScrub:
		return fmt.Errorf("heal: Config.ScrubBytes %d must be positive, or NoScrub", c.ScrubBytes)
	}
	return nil
}

// Healer heals one host's share of the cluster. It is safe for concurrent
// use.
type Healer struct {
	cfg     Config
	members func(context.Context) ([]ring.Ref, error)
	placer  Placer
	logs    Logs
	blocks  Blocks
	btr     BlockTransport
	peers   Peers
	log     *slog.Logger
	bytes   *rate.Limiter
	syncs   *rate.Limiter
	clock   func() time.Time

	mu      sync.Mutex
	stats   nodestatus.Heal
	seen    map[string]time.Time // host → when a pass last saw it in the ring
	scrubAt blockstore.Hash      // where the next scrub starts
	index   map[Kind]*index      // the items held, as last listed
	leaving bool
	last    []ring.Ref           // the ring as the last pass saw it
	waits   map[string]time.Time // partition → when its hand-off's wait was last logged

	wake chan struct{}
}

// New returns a healer. members returns the ring's vnodes (ring.Members);
// placer checks that the ring places a block elsewhere before this host
// drops it.
func New(cfg Config, members func(context.Context) ([]ring.Ref, error), placer Placer, logs Logs, blocks Blocks, btr BlockTransport, peers Peers) (*Healer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Healer{
		cfg: cfg, members: members, placer: placer, logs: logs, blocks: blocks, btr: btr, peers: peers, log: cfg.Logger,
		bytes: rate.NewLimiter(rate.Limit(cfg.BytesPerSecond), max(cfg.BytesPerSecond, blockstore.MaxBlockBytes)),
		syncs: rate.NewLimiter(rate.Limit(cfg.SyncsPerSecond), cfg.SyncsPerSecond),
		clock: time.Now, seen: map[string]time.Time{}, index: map[Kind]*index{},
		wake: make(chan struct{}, 1),
	}, nil
}

// Stats returns the healer's counters.
func (h *Healer) Stats() nodestatus.Heal {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.stats
	s.Waiting = slices.Clone(s.Waiting)
	if s.State == "" {
		s.State = "idle"
	}
	return s
}

func (h *Healer) count(fn func(s *nodestatus.Heal)) {
	h.mu.Lock()
	fn(&h.stats)
	h.mu.Unlock()
}

func (h *Healer) fail(err error) {
	h.log.Warn("healing", "err", err)
	h.count(func(s *nodestatus.Heal) { s.Errors++; s.LastError = err.Error() })
}

// Expect notes hosts that belong to the cluster (the peers a restarted
// node remembers) as seen now, so that passes wait the grace time for
// those that have not come back yet rather than copy their data at once.
func (h *Healer) Expect(hosts ...string) {
	now := h.clock()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, host := range hosts {
		if _, ok := h.seen[host]; !ok && host != h.cfg.Addr {
			h.seen[host] = now
		}
	}
}

// Wake makes the next pass start now (after a ring change, say).
func (h *Healer) Wake() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// minGap is the least time between two passes.
const minGap = 2 * time.Second

// Run makes passes until ctx ends.
func (h *Healer) Run(ctx context.Context) {
	for {
		if _, err := h.Pass(ctx); err != nil && ctx.Err() == nil {
			h.fail(err)
		}
		// A ring change wakes the next pass early, but not sooner than
		// minGap after this one: a ring settling changes many times.
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(minGap, h.cfg.Interval)):
		}
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		case <-time.After(h.cfg.Interval - min(minGap, h.cfg.Interval)):
		}
	}
}

// pass is the state of one pass.
type pass struct {
	self    string
	arcs    []Arc      // ascending Hi
	sets    [][]string // each arc's replica set, leader first
	hosts   int
	changed int // items sent, synced or dropped; and arcs that differed
	pending int // items not yet where they belong
	// missing counts the copies of partitions and blocks found missing or
	// behind on a replica, or on the wrong hosts.
	missingParts, missingBlocks int64
	synced                      map[string]bool
	leaving                     bool
	// progress reports the share of the current kind's work done.
	progress func(float64)
	// stable says that the ring is as the last pass saw it: only then does
	// a pass drop what it holds, so that a view of a ring still settling
	// after a change drops nothing.
	stable bool
}

// missing notes n copies of kind found missing.
func (p *pass) missing(kind Kind, n int) {
	if kind == KindPartition {
		p.missingParts += int64(n)
	} else {
		p.missingBlocks += int64(n)
	}
}

// Pass makes one pass and reports whether it settled: nothing to repair
// and nothing held out of place.
func (h *Healer) Pass(ctx context.Context) (bool, error) {
	refs, err := h.members(ctx)
	if err != nil {
		return false, fmt.Errorf("heal: learn the ring: %w", err)
	}
	h.mu.Lock()
	leaving := h.leaving
	h.mu.Unlock()
	if !leaving {
		if waiting := h.waiting(refs); len(waiting) > 0 {
			h.count(func(s *nodestatus.Heal) { s.State, s.Waiting, s.Settled = "waiting", waiting, false })
			return false, nil
		}
	}
	start := h.clock()
	state := "healing"
	if leaving {
		state = "leaving"
	}
	h.count(func(s *nodestatus.Heal) { s.State, s.Waiting, s.PassStart, s.Progress = state, nil, start, 0 })
	p := h.plan(refs, leaving)
	h.mu.Lock()
	p.stable = sameRefs(refs, h.last)
	h.last = refs
	h.mu.Unlock()
	for i, kind := range []Kind{KindPartition, KindBlock} {
		ix, err := h.list(kind, true)
		if err != nil {
			return false, err
		}
		h.count(func(s *nodestatus.Heal) {
			if kind == KindPartition {
				s.Partitions = int64(len(ix.items))
			} else {
				s.Blocks = int64(len(ix.items))
			}
		})
		p.progress = func(f float64) { h.count(func(s *nodestatus.Heal) { s.Progress = (float64(i) + f) / 3 }) }
		if err := h.heal(ctx, p, kind, ix); err != nil {
			return false, err
		}
	}
	if !leaving {
		if err := h.scrub(ctx); err != nil {
			return false, err
		}
	}
	after, err := h.members(ctx)
	settled := err == nil && p.stable && sameRefs(refs, after) && p.changed == 0 && p.pending == 0
	h.count(func(s *nodestatus.Heal) {
		s.State, s.Passes, s.Settled, s.PassEnd, s.Progress = "idle", s.Passes+1, settled, h.clock(), 1
		s.MissingPartitions, s.MissingBlocks = p.missingParts, p.missingBlocks
		if leaving {
			s.State = "leaving"
		}
	})
	h.log.Debug("pass done", "changed", p.changed, "pending", p.pending, "stable", p.stable, "settled", settled)
	if p.changed > 0 || p.pending > 0 {
		h.log.Info("healing pass", "changed", p.changed, "pending", p.pending, "took", h.clock().Sub(start).Round(time.Millisecond))
	}
	return settled, nil
}

// Hosts returns the hosts healing keeps track of: those its passes saw in
// the ring, until they have been gone from it for the grace time. A host
// just killed stays among them while the ring already leaves it out.
func (h *Healer) Hosts() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Sorted(maps.Keys(h.seen))
}

// waiting returns the hosts gone from the ring within their grace time,
// and notes the hosts in it now.
func (h *Healer) waiting(refs []ring.Ref) []string {
	now := h.clock()
	h.mu.Lock()
	defer h.mu.Unlock()
	present := map[string]bool{}
	for _, r := range refs {
		present[r.Addr] = true
		h.seen[r.Addr] = now
	}
	var out []string
	for host, at := range h.seen {
		switch {
		case present[host]:
		case h.leftLately(host, now):
			delete(h.seen, host) // it left, handing its data off
		case now.Sub(at) < h.cfg.Grace:
			out = append(out, host)
		default:
			delete(h.seen, host) // gone for good: its data is copied now
		}
	}
	slices.Sort(out)
	return out
}

// leftLately reports whether the ring heard within the grace time that
// host left gracefully. A host that comes back within it and dies is then
// not waited for: its data is copied at once, which is only wasteful.
func (h *Healer) leftLately(host string, now time.Time) bool {
	if h.cfg.LeftAt == nil {
		return false
	}
	at := h.cfg.LeftAt(host)
	return !at.IsZero() && now.Sub(at) < h.cfg.Grace
}

func sameRefs(a, b []ring.Ref) bool {
	if len(a) != len(b) {
		return false
	}
	ids := map[ring.ID]string{}
	for _, r := range a {
		ids[r.ID] = r.Addr
	}
	for _, r := range b {
		if addr, ok := ids[r.ID]; !ok || addr != r.Addr {
			return false
		}
	}
	return true
}

// plan cuts the ring into arcs, one per vnode, each with its replica set.
func (h *Healer) plan(refs []ring.Ref, leaving bool) *pass {
	var c ring.Cache
	c.Update(refs)
	sorted := slices.Clone(refs)
	slices.SortFunc(sorted, func(a, b ring.Ref) int { return a.ID.Cmp(b.ID) })
	sorted = slices.CompactFunc(sorted, func(a, b ring.Ref) bool { return a.ID == b.ID })
	p := &pass{self: h.cfg.Addr, synced: map[string]bool{}, leaving: leaving}
	hosts := map[string]bool{}
	for i, r := range sorted {
		hosts[r.Addr] = true
		lo := sorted[(i+len(sorted)-1)%len(sorted)].ID
		res, _ := c.Lookup(r.ID, h.cfg.Replicas)
		set := make([]string, len(res.Replicas))
		for j, rep := range res.Replicas {
			set[j] = rep.Addr
		}
		p.arcs = append(p.arcs, Arc{Lo: lo, Hi: r.ID})
		p.sets = append(p.sets, set)
	}
	p.hosts = len(hosts)
	return p
}

// arcOf returns the index of the arc holding position x.
func (p *pass) arcOf(x ring.ID) int {
	i := sort.Search(len(p.arcs), func(i int) bool { return p.arcs[i].Hi.Cmp(x) >= 0 })
	if i == len(p.arcs) {
		return 0 // past the last vnode: the first one's arc, which wraps
	}
	return i
}

// mine reports whether this host should hold the items of arc i.
func (p *pass) mine(i int) bool { return !p.leaving && slices.Contains(p.sets[i], p.self) }

// heal compares this host's items of one kind with the other replicas of
// each arc it holds, repairs what they lack, and hands off what sits on
// arcs it no longer holds.
func (h *Healer) heal(ctx context.Context, p *pass, kind Kind, ix *index) error {
	byArc := make([][]entry, len(p.arcs))
	for _, e := range ix.items {
		i := p.arcOf(e.pos)
		byArc[i] = append(byArc[i], e)
	}
	// Anti-entropy with each other replica of the arcs this host holds.
	peers := map[string][]int{}
	for i, set := range p.sets {
		if !p.mine(i) {
			continue
		}
		for _, m := range set {
			if m != p.self {
				peers[m] = append(peers[m], i)
			}
		}
	}
	var strays []int
	for i, items := range byArc {
		if len(items) > 0 && !p.mine(i) {
			strays = append(strays, i)
		}
	}
	steps, done := len(peers)+len(strays), 0
	step := func() {
		done++
		p.progress(float64(done) / float64(steps))
	}
	for _, peer := range slices.Sorted(maps.Keys(peers)) {
		step()
		if err := h.compare(ctx, p, kind, peer, peers[peer], byArc); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			h.fail(fmt.Errorf("heal: %s with %s: %w", kind, peer, err))
			p.pending++
		}
	}
	// Partitions level everywhere whose replica set in force is not yet the
	// ring's (a member died, say): their leader moves it.
	if kind == KindPartition {
		for i, items := range byArc {
			if !p.mine(i) {
				continue
			}
			for _, e := range items {
				if txlog.NextConfig(e.config, p.sets[i], h.cfg.Replicas) == nil || p.synced[e.Key] {
					continue
				}
				p.missing(kind, 1)
				resp, err := h.sync(ctx, p, e.Key, p.sets[i])
				switch {
				case err != nil:
					if ctx.Err() != nil {
						return ctx.Err()
					}
					h.fail(fmt.Errorf("heal: %w", err))
					p.pending++
				case txlog.NextConfig(resp.Members, p.sets[i], h.cfg.Replicas) != nil:
					p.pending++
				default:
					p.changed++
				}
			}
		}
	}
	// Hand-off of what the ring places elsewhere.
	for _, i := range strays {
		step()
		if err := h.handOff(ctx, p, kind, p.sets[i], byArc[i]); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			h.fail(fmt.Errorf("heal: hand off %s: %w", kind, err))
			p.pending++
		}
	}
	return nil
}

// compare checks the arcs this host shares with peer: where their digests
// differ, it lists the peer's items and repairs those the peer lacks or
// holds in another version. What the peer holds and this host lacks, the
// peer's own pass repairs.
func (h *Healer) compare(ctx context.Context, p *pass, kind Kind, peer string, arcs []int, byArc [][]entry) error {
	want := make([]Arc, len(arcs))
	for j, i := range arcs {
		want[j] = p.arcs[i]
	}
	cctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
	theirs, err := h.peers.Digests(cctx, peer, kind, want)
	cancel()
	if err != nil {
		return err
	}
	if len(theirs) != len(arcs) {
		return fmt.Errorf("%d digests for %d arcs", len(theirs), len(arcs))
	}
	h.count(func(s *nodestatus.Heal) { s.ArcsCompared += int64(len(arcs)) })
	for j, i := range arcs {
		var ours Digest
		for _, e := range byArc[i] {
			ours.add(e.Item)
		}
		if ours == theirs[j] {
			continue
		}
		h.count(func(s *nodestatus.Heal) { s.ArcsDiffered++ })
		have, err := h.listPeer(ctx, peer, kind, p.arcs[i])
		if err != nil {
			return err
		}
		var lack []entry
		for _, e := range byArc[i] {
			if d, ok := have[e.Key]; !ok || d != e.Digest {
				lack = append(lack, e)
			}
		}
		p.missing(kind, len(lack))
		if err := h.give(ctx, p, kind, peer, p.sets[i], lack); err != nil {
			return err
		}
	}
	return nil
}

// listPeer returns the peer's items on an arc, key → digest.
func (h *Healer) listPeer(ctx context.Context, peer string, kind Kind, arc Arc) (map[string][32]byte, error) {
	out := map[string][32]byte{}
	after := ""
	for {
		cctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
		items, more, err := h.peers.Items(cctx, peer, kind, arc, after, MaxItems)
		cancel()
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			out[it.Key] = it.Digest
			after = it.Key
		}
		if !more || len(items) == 0 {
			return out, nil
		}
	}
}

// give repairs items the peer lacks: blocks are sent, partitions synced by
// their leader.
func (h *Healer) give(ctx context.Context, p *pass, kind Kind, peer string, set []string, items []entry) error {
	if kind == KindPartition {
		for _, e := range items {
			resp, err := h.sync(ctx, p, e.Key, set)
			if err != nil {
				return err
			}
			// Level already (the peer's listing was older than the sync)
			// is no change.
			if resp.Tx.Hash != e.Digest || resp.Synced < len(resp.Members) || !sameMembers(resp.Members, set) {
				p.changed++
			}
		}
		return nil
	}
	hashes := make([]blockstore.Hash, len(items))
	for i, e := range items {
		hashes[i] = blockstore.Hash(e.Digest)
	}
	return h.sendBlocks(ctx, p, peer, hashes)
}

// sync has the partition's leader (first of set) bring its replicas level
// and onto the ring's hosts.
func (h *Healer) sync(ctx context.Context, p *pass, name string, set []string) (txlog.Response, error) {
	if err := h.syncs.Wait(ctx); err != nil {
		return txlog.Response{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
	defer cancel()
	resp, err := h.logs.Sync(cctx, name, set[0])
	if err != nil {
		return resp, fmt.Errorf("sync %q: %w", name, err)
	}
	if !p.synced[name] {
		p.synced[name] = true
		h.count(func(s *nodestatus.Heal) { s.PartitionsSynced++ })
	}
	return resp, nil
}

// noteWait reports whether a hand-off that waits on partition name is
// logged now: once a minute per partition, so a wait that does not end
// shows in the log without filling it.
func (h *Healer) noteWait(name string) bool {
	now := time.Now() // not h.clock: a node's clock may jump back for good
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.waits[name]) < time.Minute {
		return false
	}
	if h.waits == nil {
		h.waits = map[string]time.Time{}
	}
	h.waits[name] = now
	return true
}

func sameMembers(a, b []string) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(m string) bool { return !slices.Contains(b, m) })
}

// sendBlocks sends the peer those of the blocks it does not hold.
func (h *Healer) sendBlocks(ctx context.Context, p *pass, peer string, hashes []blockstore.Hash) error {
	for start := 0; start < len(hashes); start += MaxItems {
		batch := hashes[start:min(start+MaxItems, len(hashes))]
		cctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
		has, err := h.btr.Has(cctx, peer, batch, false)
		cancel()
		if err != nil {
			return err
		}
		for i, hash := range batch {
			if has[i] {
				continue
			}
			if err := h.sendBlock(ctx, peer, hash); err != nil {
				return err
			}
			p.changed++
		}
	}
	return nil
}

func (h *Healer) sendBlock(ctx context.Context, peer string, hash blockstore.Hash) error {
	data, err := h.blocks.Local().Get(hash)
	if errors.Is(err, blockstore.ErrNotFound) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return err // a damaged copy is the scrubber's
	}
	if err := h.bytes.WaitN(ctx, len(data)); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
	defer cancel()
	if err := h.btr.Put(cctx, peer, hash, data, true); err != nil {
		return fmt.Errorf("send block %s: %w", hash, err)
	}
	h.count(func(s *nodestatus.Heal) { s.BlocksSent++; s.BytesSent += int64(len(data)) })
	return nil
}

// handOff brings items of an arc this host no longer holds to the arc's
// replica set, then drops them here: a partition once its leader has moved
// its replica set off this host and every member holds the log; a block
// once every member holds it.
func (h *Healer) handOff(ctx context.Context, p *pass, kind Kind, set []string, items []entry) error {
	want := min(h.cfg.Replicas, p.hosts)
	if kind == KindPartition {
		for _, e := range items {
			resp, err := h.sync(ctx, p, e.Key, set)
			if err != nil {
				return err
			}
			if !p.stable && !p.leaving {
				p.pending++
				continue
			}
			if slices.Contains(resp.Members, p.self) || resp.Synced < len(resp.Members) || len(resp.Members) < want {
				if h.noteWait(e.Key) {
					h.log.Info("partition not handed off yet", "partition", e.Key, "members", resp.Members, "synced", resp.Synced, "want", want)
				}
				p.pending++
				continue
			}
			if err := h.logs.Drop(e.Key); err != nil {
				if errors.Is(err, txlog.ErrLeading) {
					p.pending++
					continue
				}
				return err
			}
			h.mu.Lock()
			delete(h.waits, e.Key)
			h.mu.Unlock()
			p.changed++
			h.count(func(s *nodestatus.Heal) { s.PartitionsDropped++ })
		}
		return nil
	}
	hashes := make([]blockstore.Hash, len(items))
	for i, e := range items {
		hashes[i] = blockstore.Hash(e.Digest)
	}
	held := 0
	for _, m := range set {
		if m == p.self {
			continue
		}
		if err := h.sendBlocks(ctx, p, m, hashes); err != nil {
			h.fail(fmt.Errorf("heal: hand off blocks to %s: %w", m, err))
			continue
		}
		held++
	}
	if held < want || (!p.stable && !p.leaving) {
		p.pending += len(hashes)
		return nil
	}
	for _, hash := range hashes {
		if !p.leaving {
			res, err := h.placer.Lookup(ctx, ring.ID(hash), h.cfg.Replicas)
			if err != nil || slices.ContainsFunc(res.Replicas, func(r ring.Ref) bool { return r.Addr == p.self }) {
				p.pending++
				continue // the ring does not agree yet
			}
		}
		if err := h.blocks.Local().Delete(hash, false); err != nil {
			return err
		}
		p.changed++
		h.count(func(s *nodestatus.Heal) { s.BlocksDropped++ })
	}
	return nil
}

// scrub re-hashes up to ScrubBytes of local blocks, going on from where the
// last pass stopped, and replaces a damaged copy with a sound one from
// another replica.
func (h *Healer) scrub(ctx context.Context) error {
	if h.cfg.ScrubBytes == NoScrub {
		return nil
	}
	ix, err := h.list(KindBlock, false)
	if err != nil || len(ix.items) == 0 {
		return err
	}
	h.mu.Lock()
	from := h.scrubAt
	h.mu.Unlock()
	local := h.blocks.Local()
	start := sort.Search(len(ix.byHash), func(i int) bool { return ring.ID(ix.byHash[i]).Cmp(ring.ID(from)) > 0 })
	var done int64
	v := blockstore.NewVerifier()
	for n := 0; n < len(ix.byHash) && done < h.cfg.ScrubBytes; n++ {
		hash := ix.byHash[(start+n)%len(ix.byHash)]
		size, err := local.Verify(hash, v)
		switch {
		case errors.Is(err, blockstore.ErrNotFound):
		case errors.Is(err, blockstore.ErrCorrupt):
			h.count(func(s *nodestatus.Heal) { s.BlocksCorrupt++ })
			h.log.Warn("damaged block found", "block", hash.String(), "err", err)
			cctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
			good, gerr := h.blocks.Get(cctx, hash, level.Quorum)
			cancel()
			if gerr == nil {
				_, gerr = local.PutHashed(hash, good, true)
			}
			if gerr != nil {
				h.fail(fmt.Errorf("heal: repair damaged block %s: %w", hash, gerr))
			}
		case err != nil:
			return err
		default:
			done += size
		}
		h.count(func(s *nodestatus.Heal) { s.BlocksScrubbed++ })
		h.mu.Lock()
		h.scrubAt = hash
		h.mu.Unlock()
	}
	return nil
}

// Leave hands off everything this host holds, pass after pass, until it
// holds nothing or ctx ends. Call it once the host has left the ring, so
// that members returns the ring without it.
func (h *Healer) Leave(ctx context.Context) error {
	h.mu.Lock()
	h.leaving = true
	h.mu.Unlock()
	for {
		if _, err := h.Pass(ctx); err != nil {
			if ctx.Err() != nil {
				return err
			}
			h.fail(err)
		}
		parts, blocks, err := h.held()
		if err != nil {
			return err
		}
		if parts == 0 && blocks == 0 {
			return nil
		}
		h.log.Info("handing off", "partitions", parts, "blocks", blocks)
		select {
		case <-ctx.Done():
			return fmt.Errorf("heal: %d partitions and %d blocks not handed off: %w", parts, blocks, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// held counts the partitions and blocks this host holds.
func (h *Healer) held() (parts, blocks int, err error) {
	for _, kind := range []Kind{KindPartition, KindBlock} {
		ix, err := h.list(kind, true)
		if err != nil {
			return 0, 0, err
		}
		if kind == KindPartition {
			parts = len(ix.items)
		} else {
			blocks = len(ix.items)
		}
	}
	return parts, blocks, nil
}

// ErrBadRequest marks a malformed request from another host.
var ErrBadRequest = errors.New("heal: bad request")

// Join copies onto this host, before it joins the ring, what the ring
// would place on it once its vnodes mine are in: for each arc it will
// hold, it lists the items of the hosts that hold that arc now, fetches
// the blocks it lacks and seeds the partitions' committed logs
// (txlog.Service.Seed). Meanwhile those hosts go on serving; what is
// written after the copy reaches this host when the leaders add it to
// their replica sets. Items it cannot copy are left to the takeover and
// the passes; Join returns how many it copied and how many it could not.
func (h *Healer) Join(ctx context.Context, current, mine []ring.Ref) (copied, missed int) {
	if len(current) == 0 {
		return 0, 0
	}
	var old ring.Cache
	old.Update(current)
	p := h.plan(append(slices.Clone(current), mine...), false)
	var arcs []int
	for i, set := range p.sets {
		if slices.Contains(set, h.cfg.Addr) {
			arcs = append(arcs, i)
		}
	}
	h.count(func(s *nodestatus.Heal) { s.State, s.Progress = "joining", 0 })
	defer h.count(func(s *nodestatus.Heal) { s.State = "idle" })
	for n, i := range arcs {
		res, _ := old.Lookup(p.arcs[i].Hi, h.cfg.Replicas)
		var holders []string
		for _, r := range res.Replicas {
			holders = append(holders, r.Addr)
		}
		c, m := h.copyArc(ctx, p.arcs[i], holders)
		copied, missed = copied+c, missed+m
		h.count(func(s *nodestatus.Heal) { s.Progress = float64(n+1) / float64(len(arcs)) })
	}
	return copied, missed
}

// copyArc copies the items the holders hold on one arc; holders[0] leads
// it.
func (h *Healer) copyArc(ctx context.Context, arc Arc, holders []string) (copied, missed int) {
	if len(holders) == 0 {
		return 0, 0
	}
	for _, kind := range []Kind{KindPartition, KindBlock} {
		where := map[string][]string{} // key → holders that list it
		for _, holder := range holders {
			items, err := h.listPeer(ctx, holder, kind, arc)
			if err != nil {
				h.log.Debug("cannot list an arc's items", "holder", holder, "err", err)
				continue
			}
			for key := range items {
				where[key] = append(where[key], holder)
			}
		}
		for _, key := range slices.Sorted(maps.Keys(where)) {
			if err := h.copyItem(ctx, kind, key, holders[0], where[key]); err != nil {
				if ctx.Err() != nil {
					return copied, missed
				}
				h.log.Debug("cannot copy an item before joining", "kind", kind, "err", err)
				missed++
				continue
			}
			copied++
		}
	}
	return copied, missed
}

// copyItem copies one partition (seeded through its leader) or block
// (from the first holder that gives a sound copy).
func (h *Healer) copyItem(ctx context.Context, kind Kind, key, leader string, holders []string) error {
	cctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
	defer cancel()
	if kind == KindPartition {
		if err := h.syncs.Wait(ctx); err != nil {
			return err
		}
		return h.logs.Seed(cctx, key, leader)
	}
	hash, err := blockstore.HashFromBytes([]byte(key))
	if err != nil {
		return err
	}
	if ok, err := h.blocks.Local().Has(hash); err != nil || ok {
		return err
	}
	var lastErr error
	for _, from := range holders {
		data, err := h.btr.Get(cctx, from, hash)
		if err == nil && blockstore.Sum(data) == hash {
			if err := h.bytes.WaitN(ctx, len(data)); err != nil {
				return err
			}
			_, err = h.blocks.Local().PutHashed(hash, data, true)
			return err
		}
		lastErr = fmt.Errorf("from %s: %v", from, err)
	}
	return fmt.Errorf("block %s: %v", hash, lastErr)
}
