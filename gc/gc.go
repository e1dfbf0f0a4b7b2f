// Package gc collects the blocks that no file refers to any more.
//
// A cycle marks, then sweeps. It marks every block that an inode of the
// filesystem refers to: it lists the partitions every host holds, and in
// each filesystem partition every inode record (at quorum), so an inode
// that a rename moved between directories is seen wherever its entries
// are. The marked blocks go into a Bloom filter, which every host gets
// with an age, the grace time plus how long the cycle has run: it deletes
// the blocks the filter does not contain and that were last used longer
// ago than that, by its own clock, that is before the cycle's start less
// the grace time. No two clocks need agree. A write marks every block it
// stores as used, on every replica,
// even one that held it already (blockstore's touch), and commits the
// inode that refers to it within the grace time; so a block a write is
// about to refer to is never swept, however the cycle and the write
// interleave (docs/gc.md gives the argument).
package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/heal"
	"github.com/difuse/difuse/inode"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/nodestatus"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/txlog"
)

// Config configures a Collector.
type Config struct {
	// Addr is this host's address in the ring. Required.
	Addr string
	// Grace is how long a block stays after its last use however
	// unreferenced: longer than any write takes from storing its blocks to
	// committing its inode. Default 1h.
	Grace time.Duration
	// Interval is how often the background collector runs a cycle (one
	// host of the cluster at a time, by a lease); Off runs none. Default
	// 1h.
	Interval time.Duration
	// Rate bounds the blocks a sweep examines per second on each host.
	// Default 20,000.
	Rate int
	// Logger receives cycles' results; nil discards them.
	Logger *slog.Logger
	// Clock is the host's clock, which the blocks' last uses are noted
	// by. Default time.Now.
	Clock func() time.Time
}

// Off is the Config.Interval of a node that runs no cycle of its own.
const Off time.Duration = -1

// validate fills in the defaults and checks the configuration.
func (c *Config) validate() error {
	if c.Grace == 0 {
		c.Grace = time.Hour
	}
	if c.Interval == 0 {
		c.Interval = time.Hour
	}
	if c.Rate == 0 {
		c.Rate = 20000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	switch {
	case c.Addr == "":
		return errors.New("gc: Config.Addr is required")
	case c.Grace < 0:
		return fmt.Errorf("gc: Config.Grace %s must be positive", c.Grace)
	case c.Interval < 0 && c.Interval != Off:
		return fmt.Errorf("gc: Config.Interval %s must be positive, or Off", c.Interval)
	case c.Rate < 0:
		return fmt.Errorf("gc: Config.Rate %d must be positive", c.Rate)
	}
	return nil
}

// Log runs transaction-log requests; *txlog.Service implements it.
type Log interface {
	Do(ctx context.Context, req txlog.Request) (txlog.Response, error)
}

// Lister lists the items a host holds on an arc of the ring (healing's
// Items call).
type Lister interface {
	Items(ctx context.Context, to string, kind heal.Kind, arc heal.Arc, after string, limit int) ([]heal.Item, bool, error)
}

// Sweepers asks other hosts to sweep their blocks.
type Sweepers interface {
	Sweep(ctx context.Context, to string, req SweepRequest) (blockstore.SweepStats, error)
}

// Blocks is this host's block store as collection uses it
// (*blockstore.Service).
type Blocks interface {
	Sweep(keep func(blockstore.Hash) bool, cutoff time.Time, dryRun bool, each func() error) (blockstore.SweepStats, error)
}

// SweepRequest asks a host to delete the blocks Keep does not contain and
// that were last used more than Age ago, by the host's clock; DryRun only
// counts them.
type SweepRequest struct {
	Keep   *Bloom
	Age    time.Duration
	DryRun bool
}

// Collector runs collection cycles and sweeps this host's blocks when a
// collector asks. It is safe for concurrent use.
type Collector struct {
	cfg      Config
	members  func(context.Context) ([]ring.Ref, error)
	lister   Lister
	log      Log
	sweepers Sweepers
	blocks   Blocks
	limiter  *rate.Limiter
	cycle    sync.Mutex // one cycle at a time on this host
	mu       sync.Mutex
	stats    nodestatus.GC
	clock    func() time.Time
}

// New returns a collector over the ring's members, the hosts' listings,
// the transaction logs, the other hosts' sweeps and this host's blocks.
func New(cfg Config, members func(context.Context) ([]ring.Ref, error), lister Lister, log Log, sweepers Sweepers, blocks Blocks) (*Collector, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Collector{cfg: cfg, members: members, lister: lister, log: log, sweepers: sweepers, blocks: blocks,
		limiter: rate.NewLimiter(rate.Limit(cfg.Rate), max(cfg.Rate/10, 1)), stats: nodestatus.GC{State: "idle"}, clock: cfg.Clock}, nil
}

// Stats returns the collector's state.
func (c *Collector) Stats() nodestatus.GC {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	if s.Last != nil {
		last := *s.Last
		last.Failed = slices.Clone(last.Failed)
		s.Last = &last
	}
	return s
}

func (c *Collector) update(fn func(s *nodestatus.GC)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn(&c.stats)
}

func (c *Collector) fail(err error) {
	c.update(func(s *nodestatus.GC) { s.Errors, s.LastError = s.Errors+1, err.Error() })
}

// listLimit is how many items or records one listing call returns.
const listLimit = 1000

// Collect runs one cycle: mark, then sweep every host of the ring. A mark
// that cannot see every host or every filesystem partition stops the
// cycle before anything is deleted.
func (c *Collector) Collect(ctx context.Context, dryRun bool) (nodestatus.GCReport, error) {
	c.cycle.Lock()
	defer c.cycle.Unlock()
	began := time.Now() // how long the cycle runs is measured on the monotonic clock
	rep := nodestatus.GCReport{Start: c.clock(), DryRun: dryRun}
	defer c.update(func(s *nodestatus.GC) { s.State, s.Done, s.Total = "idle", 0, 0 })
	keep, hosts, err := c.mark(ctx, &rep)
	if err != nil {
		c.fail(err)
		return rep, err
	}
	c.update(func(s *nodestatus.GC) { s.State, s.Done, s.Total = "sweeping", 0, int64(len(hosts)) })
	// The cycle's start less the grace time, as an age each host measures
	// on its own clock.
	req := SweepRequest{Keep: keep, Age: c.cfg.Grace + time.Since(began), DryRun: dryRun}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, host := range hosts {
		wg.Go(func() {
			var st blockstore.SweepStats
			var err error
			if host == c.cfg.Addr {
				st, err = c.HandleSweep(ctx, req)
			} else {
				st, err = c.sweepers.Sweep(ctx, host, req)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rep.Failed = append(rep.Failed, host+": "+err.Error())
				c.fail(fmt.Errorf("gc: sweep %s: %w", host, err))
			}
			rep.Hosts++
			rep.Examined += st.Examined
			rep.Freed += st.Freed
			rep.FreedBytes += st.FreedBytes
			rep.Recent += st.Recent
			rep.RecentBytes += st.RecentBytes
			c.update(func(s *nodestatus.GC) { s.Done++ })
		})
	}
	wg.Wait()
	slices.Sort(rep.Failed)
	rep.End = c.clock()
	c.update(func(s *nodestatus.GC) { s.Cycles, s.Last = s.Cycles+1, &rep })
	c.cfg.Logger.Info("garbage collection", "dry_run", dryRun, "partitions", rep.Partitions, "inodes", rep.Inodes,
		"referenced", rep.Referenced, "hosts", rep.Hosts, "examined", rep.Examined, "freed", rep.Freed,
		"freed_bytes", rep.FreedBytes, "recent", rep.Recent, "failed", len(rep.Failed), "took", rep.End.Sub(rep.Start).Round(time.Millisecond))
	return rep, nil
}

// mark returns the filter of every block an inode refers to, and the
// hosts of the ring.
func (c *Collector) mark(ctx context.Context, rep *nodestatus.GCReport) (*Bloom, []string, error) {
	c.update(func(s *nodestatus.GC) { s.State, s.Done, s.Total = "marking", 0, 0 })
	refs, err := c.members(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("gc: learn the ring: %w", err)
	}
	var hosts []string
	for _, r := range refs {
		hosts = append(hosts, r.Addr)
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	parts := map[string]bool{} // of the filesystem, and of pins
	for _, host := range hosts {
		for after := ""; ; {
			items, more, err := c.lister.Items(ctx, host, heal.KindPartition, heal.Arc{}, after, listLimit)
			if err != nil {
				return nil, nil, fmt.Errorf("gc: list the partitions of %s: %w", host, err)
			}
			for _, it := range items {
				if strings.HasPrefix(it.Key, inode.PartitionPrefix) || strings.HasPrefix(it.Key, PinPrefix) {
					parts[it.Key] = true
				}
				after = it.Key
			}
			if !more || len(items) == 0 {
				break
			}
		}
	}
	c.update(func(s *nodestatus.GC) { s.Total = int64(len(parts)) })
	var blocks []blockstore.Hash
	for _, part := range slices.Sorted(maps.Keys(parts)) {
		if strings.HasPrefix(part, PinPrefix) {
			err := c.list(ctx, part, "", func(name string, _ []byte) error {
				h, err := blockstore.ParseHash(name)
				if err != nil {
					return fmt.Errorf("pin %q: %w", name, err)
				}
				blocks = append(blocks, h)
				rep.Pins++
				return nil
			})
			if err != nil {
				return nil, nil, fmt.Errorf("gc: %s: %w", part, err)
			}
			rep.Partitions++
			c.update(func(s *nodestatus.GC) { s.Done++ })
			continue
		}
		// Inodes hold the extents of small files, pages those of large
		// ones. Every page is marked, those no inode names too: a page is
		// written before the inode that names it, and it is garbage only
		// after a crash (fsck finds it).
		err := c.list(ctx, part, inode.InodePrefix, func(name string, value []byte) error {
			a, err := inode.DecodeAttr(value)
			if err != nil {
				return fmt.Errorf("inode %s: %w", name, err)
			}
			rep.Inodes++
			for _, e := range a.Extents {
				blocks = append(blocks, e.Block)
			}
			return nil
		})
		if err == nil {
			err = c.list(ctx, part, inode.PagePrefix, func(name string, value []byte) error {
				ext, err := inode.DecodePage(value)
				if err != nil {
					return fmt.Errorf("page %s: %w", name, err)
				}
				for _, e := range ext {
					blocks = append(blocks, e.Block)
				}
				return nil
			})
		}
		if err != nil {
			return nil, nil, fmt.Errorf("gc: %s: %w", part, err)
		}
		rep.Partitions++
		c.update(func(s *nodestatus.GC) { s.Done++ })
	}
	slices.SortFunc(blocks, func(a, b blockstore.Hash) int { return slices.Compare(a[:], b[:]) })
	blocks = slices.Compact(blocks)
	rep.Referenced = int64(len(blocks))
	keep := NewBloom(len(blocks), 0.001)
	for _, h := range blocks {
		keep.Add(h)
	}
	return keep, hosts, nil
}

// Pins keep blocks that no file refers to, those stored through the block
// API: a block's pin is the record named by its hash in partition
// PinPartition(hash), and a cycle marks every pinned block. Pins spread
// over 256 partitions, by the hash's first byte.
const PinPrefix = "pins/"

// PinPartition returns the partition that holds block h's pin.
func PinPartition(h blockstore.Hash) string { return fmt.Sprintf("%s%02x", PinPrefix, h[0]) }

// list calls fn with every record of partition part whose name starts
// with prefix, read at quorum.
func (c *Collector) list(ctx context.Context, part, prefix string, fn func(name string, value []byte) error) error {
	for after := ""; ; {
		resp, err := c.log.Do(ctx, txlog.Request{Partition: part, Level: level.Quorum, Kind: txlog.KindList, Name: prefix, After: after, Limit: listLimit})
		if err != nil {
			return fmt.Errorf("list %s: %w", prefix, err)
		}
		for _, r := range resp.Records {
			after = r.Name
			if err := fn(r.Name, r.Value); err != nil {
				return err
			}
		}
		if !resp.More {
			return nil
		}
	}
}

// leasePartition and leaseRecord hold the background collector's lease:
// "ADDR UNTIL-UNIX-NANO".
const (
	leasePartition = "gc/lease"
	leaseRecord    = "lease"
)

// Run runs a cycle every Interval (after a random first wait), when this
// host gets the cluster's lease, until ctx ends. Cycles of two hosts at
// once are safe, only wasteful: the lease keeps them apart while the
// hosts' clocks roughly agree.
func (c *Collector) Run(ctx context.Context) {
	if c.cfg.Interval == Off {
		return
	}
	wait := time.Duration(rand.Int64N(int64(c.cfg.Interval)))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = c.cfg.Interval
		if ok, err := c.lease(ctx); err != nil {
			c.fail(fmt.Errorf("gc: lease: %w", err))
			continue
		} else if !ok {
			continue
		}
		if _, err := c.Collect(ctx, false); err != nil {
			c.cfg.Logger.Warn("garbage collection failed", "err", err)
		}
	}
}

// lease takes the cluster's collection lease for half an interval, if no
// other host holds it.
func (c *Collector) lease(ctx context.Context) (bool, error) {
	resp, err := c.log.Do(ctx, txlog.Request{Partition: leasePartition, Level: level.Quorum, Kind: txlog.KindRead, Name: leaseRecord})
	if err != nil && !errors.Is(err, txlog.ErrNotFound) {
		return false, err
	}
	now := c.clock()
	var ifMatch txlog.Hash // absent
	if resp.Record.Exists {
		var holder string
		var until int64
		if _, err := fmt.Sscanf(string(resp.Record.Value), "%s %d", &holder, &until); err == nil && holder != c.cfg.Addr && now.UnixNano() < until {
			return false, nil
		}
		ifMatch = resp.Record.Hash
	}
	value := fmt.Sprintf("%s %d", c.cfg.Addr, now.Add(c.cfg.Interval/2).UnixNano())
	_, err = c.log.Do(ctx, txlog.Request{Partition: leasePartition, Level: level.Quorum, Kind: txlog.KindWrite,
		Write: []txlog.Change{{Name: leaseRecord, Value: []byte(value), IfMatch: &ifMatch}}})
	if errors.Is(err, txlog.ErrConflict) {
		return false, nil // another host took it first
	}
	return err == nil, err
}

// HandleSweep sweeps this host's blocks as a collector asks, at most
// Config.Rate blocks a second.
func (c *Collector) HandleSweep(ctx context.Context, req SweepRequest) (blockstore.SweepStats, error) {
	if err := req.Keep.Check(); err != nil {
		return blockstore.SweepStats{}, err
	}
	if req.Age < c.cfg.Grace {
		return blockstore.SweepStats{}, fmt.Errorf("gc: a sweep of blocks unused for %s, less than this host's grace time %s", req.Age, c.cfg.Grace)
	}
	st, err := c.blocks.Sweep(req.Keep.Contains, c.clock().Add(-req.Age), req.DryRun, func() error { return c.limiter.Wait(ctx) })
	if !req.DryRun {
		c.update(func(s *nodestatus.GC) {
			s.FreedBlocks, s.FreedBytes = s.FreedBlocks+st.Freed, s.FreedBytes+st.FreedBytes
		})
	}
	return st, err
}
