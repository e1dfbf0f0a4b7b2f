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
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/nodestatus"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/txlog"
)

// ErrBadRequest marks a malformed request from another host.
var ErrBadRequest = errors.New("heal: bad request")

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

// Blocks is the block service as healing uses it (*blockstore.Service):
// this host's copies, and copies between hosts.
type Blocks interface {
	Walk(fn func(blockstore.Hash) error) error
	Holds(h blockstore.Hash) (bool, error)
	Verify(h blockstore.Hash, v *blockstore.Verifier) (int64, error)
	Drop(h blockstore.Hash) error
	Repair(ctx context.Context, h blockstore.Hash) error
	HeldBy(ctx context.Context, host string, hashes []blockstore.Hash) ([]bool, error)
	Send(ctx context.Context, host string, h blockstore.Hash) (int, error)
	Fetch(ctx context.Context, host string, h blockstore.Hash) (int, error)
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
func New(cfg Config, members func(context.Context) ([]ring.Ref, error), placer Placer, logs Logs, blocks Blocks, peers Peers) (*Healer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Healer{
		cfg: cfg, members: members, placer: placer, logs: logs, blocks: blocks, peers: peers, log: cfg.Logger,
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
