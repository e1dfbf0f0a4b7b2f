package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/txlog"
)

// attemptTimeout bounds one try on one node before the next is tried.
const attemptTimeout = 5 * time.Second

// Cluster talks to a cluster through any of its nodes: each request goes
// to one node, which forwards it to the leader, and moves on to the next
// node when that one cannot be reached. It learns the cluster's other
// nodes from the first that answers, so it survives the loss of the node
// it was given. It is safe for concurrent use.
type Cluster struct {
	mu    sync.Mutex
	conns []*Conn
	next  int
}

// DialCluster prepares connections to the nodes at addrs and learns the
// others from the first that answers within ctx.
func DialCluster(ctx context.Context, addrs []string) (*Cluster, error) {
	c := &Cluster{}
	for _, a := range addrs {
		if err := c.add(a); err != nil {
			c.Close()
			return nil, err
		}
	}
	if len(c.conns) == 0 {
		return nil, errors.New("client: no node address given")
	}
	var lastErr error
	for _, conn := range slices.Clone(c.conns) {
		sctx, cancel := context.WithTimeout(ctx, attemptTimeout)
		st, err := conn.Status(sctx)
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		for _, v := range st.VNodes {
			for _, r := range v.Succs {
				c.add(r.Addr)
			}
		}
		return c, nil
	}
	c.Close()
	return nil, fmt.Errorf("client: no node of %v answered: %w", addrs, lastErr)
}

func (c *Cluster) add(addr string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		if conn.addr == addr {
			return nil
		}
	}
	conn, err := Dial(addr)
	if err != nil {
		return err
	}
	c.conns = append(c.conns, conn)
	return nil
}

// Capacity asks every node it knows for its status and reports the space
// files take and have left in the cluster (see the function Capacity).
// Nodes that do not answer are left out.
func (c *Cluster) Capacity(ctx context.Context) (used, free uint64, err error) {
	c.mu.Lock()
	conns := slices.Clone(c.conns)
	c.mu.Unlock()
	var sts []Status
	for _, conn := range conns {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := conn.Status(sctx)
		cancel()
		if err == nil {
			sts = append(sts, st)
		}
	}
	if len(sts) == 0 {
		return 0, 0, errors.New("client: no node answered a status request")
	}
	used, free = Capacity(sts)
	return used, free, nil
}

// Capacity sums nodes' space: the bytes their blocks and stores take, and
// those left on their disks, each divided by the number of copies kept,
// so that free is what files can still take. Nodes that share a disk
// count its free space once each: the sum is then an upper bound.
func Capacity(sts []Status) (used, free uint64) {
	copies := 1
	for _, st := range sts {
		used += uint64(max(st.Blocks.StoredBytes+st.Store.LSMBytes+st.Store.VlogBytes, 0))
		free += uint64(max(st.Store.FreeBytes, 0))
		copies = max(copies, min(st.Replicas, len(sts)))
	}
	return used / uint64(copies), free / uint64(copies)
}

// Close closes every connection.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
	return nil
}

// try runs fn on one node after another, starting with the one that last
// answered, until fn succeeds or fails for a reason of the request's own
// (final says which), or ctx ends.
func try[T any](ctx context.Context, c *Cluster, final func(error) bool, fn func(context.Context, *Conn) (T, error)) (T, error) {
	var zero T
	var lastErr error
	for round := 0; ; round++ {
		c.mu.Lock()
		conns, start := slices.Clone(c.conns), c.next
		c.mu.Unlock()
		for i := range conns {
			k := (start + i) % len(conns)
			actx, cancel := context.WithTimeout(ctx, attemptTimeout)
			out, err := fn(actx, conns[k])
			cancel()
			if err == nil || final(err) {
				c.mu.Lock()
				c.next = k
				c.mu.Unlock()
				return out, err
			}
			lastErr = err
			if ctx.Err() != nil {
				return zero, fmt.Errorf("%w (last: %v)", ctx.Err(), lastErr)
			}
		}
		select {
		case <-ctx.Done():
			return zero, fmt.Errorf("%w (last: %v)", ctx.Err(), lastErr)
		case <-time.After(min(time.Duration(round+1)*100*time.Millisecond, time.Second)):
		}
	}
}

// txlogFinal reports whether a transaction-log error is the request's own
// answer rather than a node that could not be reached.
func txlogFinal(err error) bool {
	for _, e := range []error{txlog.ErrConflict, txlog.ErrNotFound, txlog.ErrBadRequest, txlog.ErrUnavailable} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func blockFinal(err error) bool {
	return errors.Is(err, blockstore.ErrNotFound) || errors.Is(err, blockstore.ErrCorrupt)
}

// Do runs a transaction-log request.
func (c *Cluster) Do(ctx context.Context, req txlog.Request) (txlog.Response, error) {
	return try(ctx, c, txlogFinal, func(ctx context.Context, conn *Conn) (txlog.Response, error) { return conn.Txn(ctx, req) })
}

// Set stores a block at level l.
func (c *Cluster) Set(ctx context.Context, data []byte, l level.Level) (blockstore.Hash, error) {
	return try(ctx, c, blockFinal, func(ctx context.Context, conn *Conn) (blockstore.Hash, error) { return conn.BlockSet(ctx, data, l) })
}

// Get reads a block at level l.
func (c *Cluster) Get(ctx context.Context, h blockstore.Hash, l level.Level) ([]byte, error) {
	return try(ctx, c, blockFinal, func(ctx context.Context, conn *Conn) ([]byte, error) { return conn.BlockGet(ctx, h, l) })
}
