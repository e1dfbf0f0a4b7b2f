package node

import (
	"context"
	"sync"
	"time"

	"github.com/difuse/difuse/txlog"
)

// Compaction says how often a node compacts the transaction logs it
// replicates, and what it keeps.
type Compaction struct {
	// Interval is the pause between compactions. Default 10 minutes;
	// NoCompaction turns compaction off.
	Interval time.Duration
	// Retention is what each log keeps: at least one version of each
	// record, and everything for at least MinRetention. Default
	// txlog.DefaultRetention.
	Retention txlog.Retention
}

// NoCompaction is the Compaction.Interval of a node that never compacts.
const NoCompaction time.Duration = -1

// MinRetention is the shortest time a node keeps every transaction: a
// client's retry of a write must find the write's first attempt.
const MinRetention = 30 * time.Second

// compactStats counts a node's compactions.
type compactStats struct {
	mu sync.Mutex
	// Runs and Dropped count compactions and the log entries they
	// deleted; Errors the compactions that failed.
	Runs, Dropped, Errors uint64
}

func (c *compactStats) get() compactStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return compactStats{Runs: c.Runs, Dropped: c.Dropped, Errors: c.Errors}
}

// compactLoop compacts the node's transaction logs every interval until
// ctx ends.
func (n *Node) compactLoop(ctx context.Context) {
	if n.cfg.Compact.Interval == NoCompaction {
		return
	}
	t := time.NewTicker(n.cfg.Compact.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		st, err := n.txlog.Compact(ctx, n.cfg.Compact.Retention)
		n.compact.mu.Lock()
		n.compact.Runs++
		n.compact.Dropped += uint64(st.Dropped)
		if err != nil && ctx.Err() == nil {
			n.compact.Errors++
		}
		n.compact.mu.Unlock()
		switch {
		case err != nil && ctx.Err() == nil:
			n.log.Warn("compacting the transaction logs failed", "err", err, "partitions", st.Partitions, "dropped", st.Dropped)
		case st.Dropped > 0:
			n.log.Info("compacted the transaction logs", "partitions", st.Partitions, "compacted", st.Compacted, "dropped", st.Dropped, "took", time.Since(start).Round(time.Millisecond))
		}
	}
}
