package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/nodestatus"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/txlog"
)

// attemptTimeout bounds one try on one node before the next is tried.
const attemptTimeout = 5 * time.Second

// Cluster talks to a cluster through its nodes. It learns the nodes and
// their places on the ring from the first that answers, and keeps that
// view current, so that each request goes straight to the node that leads
// its key (which forwards it if the ring moved meanwhile). When a node
// cannot be reached it moves on to the next, so it survives the loss of
// the node it was given. It is safe for concurrent use.
type Cluster struct {
	creds credentials.TransportCredentials
	mu    sync.Mutex
	conns []*Conn
	next  int
	// ring is the ring's membership as last learned.
	ring ring.Cache
	done chan struct{}
	wg   sync.WaitGroup
}

// refreshEvery is how often a Cluster relearns the ring.
const refreshEvery = 2 * time.Second

// DialCluster prepares connections to the nodes at addrs, with the
// member's credentials creds (see Dial), and learns the others from the
// first that answers within ctx.
func DialCluster(ctx context.Context, addrs []string, creds credentials.TransportCredentials) (*Cluster, error) {
	c := &Cluster{creds: creds, done: make(chan struct{})}
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
		c.learn(ctx)
		c.wg.Go(c.refresh)
		return c, nil
	}
	c.Close()
	return nil, fmt.Errorf("client: no node of %v answered: %w", addrs, lastErr)
}

// learn asks every known node for its vnodes and keeps the ring they
// make, adding nodes it did not know.
func (c *Cluster) learn(ctx context.Context) {
	c.mu.Lock()
	conns := slices.Clone(c.conns)
	c.mu.Unlock()
	var vnodes []ring.Ref
	for _, conn := range conns {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := conn.Status(sctx)
		cancel()
		if err != nil {
			continue
		}
		for _, v := range st.VNodes {
			vnodes = append(vnodes, v.Self)
			for _, r := range v.Succs {
				c.add(r.Addr)
			}
		}
	}
	if len(vnodes) == 0 {
		return // keep the last view
	}
	c.ring.Update(vnodes)
}

// refresh relearns the ring until the Cluster closes.
func (c *Cluster) refresh() {
	t := time.NewTicker(refreshEvery)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			c.learn(context.Background())
		}
	}
}

// leader returns the index of the connection to the node that leads key
// in the last view of the ring, or -1.
func (c *Cluster) leader(key ring.ID) int {
	res, ok := c.ring.Lookup(key, 1)
	if !ok {
		return -1
	}
	addr := res.Replicas[0].Addr
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, conn := range c.conns {
		if conn.addr == addr {
			if time.Since(time.Unix(0, conn.failedAt.Load())) < 2*refreshEvery {
				return -1 // failed lately: the ring may not know it yet
			}
			return k
		}
	}
	return -1
}

func (c *Cluster) add(addr string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		if conn.addr == addr {
			return nil
		}
	}
	conn, err := Dial(addr, c.creds)
	if err != nil {
		return err
	}
	c.conns = append(c.conns, conn)
	return nil
}

// HostStatus is one node's status, or why it could not be had.
type HostStatus struct {
	Addr   string
	Status nodestatus.Status
	Err    error
}

// Statuses asks every node it knows for its status at once, each within
// a second, and returns them in address order.
func (c *Cluster) Statuses(ctx context.Context) []HostStatus {
	c.mu.Lock()
	conns := slices.Clone(c.conns)
	c.mu.Unlock()
	out := make([]HostStatus, len(conns))
	var wg sync.WaitGroup
	for i, conn := range conns {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			out[i].Addr = conn.addr
			out[i].Status, out[i].Err = conn.Status(sctx)
		})
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b HostStatus) int { return strings.Compare(a.Addr, b.Addr) })
	return out
}

// Capacity asks every node it knows for its status and reports the space
// files take and have left in the cluster (see nodestatus.Capacity).
// Nodes that do not answer are left out.
func (c *Cluster) Capacity(ctx context.Context) (used, free uint64, err error) {
	var sts []nodestatus.Status
	for _, h := range c.Statuses(ctx) {
		if h.Err == nil {
			sts = append(sts, h.Status)
		}
	}
	if len(sts) == 0 {
		return 0, 0, errors.New("client: no node answered a status request")
	}
	used, free = nodestatus.Capacity(sts)
	return used, free, nil
}

// Close stops relearning the ring and closes every connection.
func (c *Cluster) Close() error {
	select {
	case <-c.done:
	default:
		close(c.done)
	}
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
	return nil
}

// try runs fn on one node after another, starting with the leader of key
// if it is known, else with the one that last answered, until fn succeeds
// or fails for a reason of the request's own (final says which), or ctx
// ends.
func try[T any](ctx context.Context, c *Cluster, key ring.ID, final func(error) bool, fn func(context.Context, *Conn) (T, error)) (T, error) {
	var zero T
	var lastErr error
	for round := 0; ; round++ {
		lead := c.leader(key)
		c.mu.Lock()
		conns, start := slices.Clone(c.conns), c.next
		c.mu.Unlock()
		if lead >= 0 && round == 0 {
			start = lead
		}
		for i := range conns {
			k := (start + i) % len(conns)
			actx, cancel := context.WithTimeout(ctx, attemptTimeout)
			out, err := fn(actx, conns[k])
			cancel()
			if err == nil || final(err) || refused(err) {
				if k != lead {
					c.mu.Lock()
					c.next = k
					c.mu.Unlock()
				}
				return out, err
			}
			lastErr = err
			if ctx.Err() != nil {
				return zero, fmt.Errorf("%w (last: %v)", ctx.Err(), lastErr)
			}
			conns[k].failedAt.Store(time.Now().UnixNano())
		}
		select {
		case <-ctx.Done():
			return zero, fmt.Errorf("%w (last: %v)", ctx.Err(), lastErr)
		case <-time.After(min(time.Duration(round+1)*100*time.Millisecond, time.Second)):
		}
	}
}

// refused reports whether a node refused the caller's credentials: every
// node would.
func refused(err error) bool {
	c := status.Code(err)
	return c == codes.PermissionDenied || c == codes.Unauthenticated
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

// Do runs a transaction-log request. A write keeps one ID across the nodes
// it is tried on, so that an attempt that was applied is not applied again.
func (c *Cluster) Do(ctx context.Context, req txlog.Request) (txlog.Response, error) {
	if req.Kind == txlog.KindWrite && req.ID.IsZero() {
		req.ID = txlog.NewWriteID()
	}
	return try(ctx, c, ring.HashKey([]byte(req.Partition)), txlogFinal, func(ctx context.Context, conn *Conn) (txlog.Response, error) {
		return conn.Txn(ctx, req)
	})
}

// Set stores a block at level l.
func (c *Cluster) Set(ctx context.Context, data []byte, l level.Level) (blockstore.Hash, error) {
	h := blockstore.Sum(data)
	if _, err := try(ctx, c, ring.ID(h), blockFinal, func(ctx context.Context, conn *Conn) (struct{}, error) {
		return struct{}{}, conn.BlockSet(ctx, h, data, l)
	}); err != nil {
		return blockstore.Hash{}, err
	}
	return h, nil
}

// Status returns the status of the first node that answers.
func (c *Cluster) Status(ctx context.Context) (nodestatus.Status, error) {
	return try(ctx, c, ring.ID{}, func(error) bool { return false }, func(ctx context.Context, conn *Conn) (nodestatus.Status, error) {
		return conn.Status(ctx)
	})
}

// checkPatience bounds the tries of one BlockCheck call: a replica that
// does not answer fails it on every node, so trying on forever is no use.
const checkPatience = 2 * time.Minute

// BlockCheck reports, for each block, how many hosts of its replica set
// hold it and how many the set has, 1,024 blocks a call.
func (c *Cluster) BlockCheck(ctx context.Context, hashes []blockstore.Hash) (held, of []int, err error) {
	type counts struct{ held, of []int }
	for start := 0; start < len(hashes); start += 1024 {
		batch := hashes[start:min(start+1024, len(hashes))]
		bctx, cancel := context.WithTimeout(ctx, checkPatience)
		r, err := try(bctx, c, ring.ID(batch[0]), blockFinal, func(ctx context.Context, conn *Conn) (counts, error) {
			h, o, err := conn.BlockCheck(ctx, batch)
			return counts{h, o}, err
		})
		cancel()
		if err != nil {
			return nil, nil, err
		}
		held, of = append(held, r.held...), append(of, r.of...)
	}
	return held, of, nil
}

// Get reads a block at level l.
func (c *Cluster) Get(ctx context.Context, h blockstore.Hash, l level.Level) ([]byte, error) {
	return try(ctx, c, ring.ID(h), blockFinal, func(ctx context.Context, conn *Conn) ([]byte, error) { return conn.BlockGet(ctx, h, l) })
}
