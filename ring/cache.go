package ring

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Cache is a client's copy of the ring's membership, for routing a key to
// its leader in one hop. It can be stale: a node receiving a request checks
// Leads, and on a miss the client refreshes the cache or falls back to
// a lookup through a node. It is safe for concurrent use.
type Cache struct {
	mu   sync.RWMutex
	refs []Ref // ascending ids
}

// Update replaces the cached membership.
func (c *Cache) Update(refs []Ref) {
	sorted := slices.Clone(refs)
	slices.SortFunc(sorted, func(a, b Ref) int { return a.ID.Cmp(b.ID) })
	sorted = slices.CompactFunc(sorted, func(a, b Ref) bool { return a.ID == b.ID })
	c.mu.Lock()
	c.refs = sorted
	c.mu.Unlock()
}

// Len returns the number of cached vnodes.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.refs)
}

// Lookup places key as Host.Lookup would on the cached membership: its
// successor, then the next vnodes on hosts not yet listed, n in all. It
// returns false if the cache is empty.
func (c *Cache) Lookup(key ID, n int) (Result, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if len(c.refs) == 0 {
		return Result{}, false
	}
	i, _ := slices.BinarySearchFunc(c.refs, key, func(r Ref, k ID) int { return r.ID.Cmp(k) })
	res := Result{Key: key}
	hosts := map[string]bool{}
	for j := 0; j < len(c.refs) && len(res.Replicas) < n; j++ {
		r := c.refs[(i+j)%len(c.refs)]
		if !hosts[r.Addr] {
			hosts[r.Addr] = true
			res.Replicas = append(res.Replicas, r)
		}
	}
	return res, true
}

// Leads reports whether the host's vnode is the leader of key: whether key
// lies between the vnode's predecessor (exclusive) and the vnode
// (inclusive). A vnode with no predecessor yet leads nothing. Servers use it
// to turn away requests routed by a stale cache.
func (h *Host) Leads(vnode ID, key ID) (bool, error) {
	v, ok := h.snapshot(vnode)
	if !ok {
		return false, ErrNoVNode
	}
	return !v.pred.IsZero() && betweenRight(v.pred.ID, key, vnode), nil
}

// membersCallTimeout bounds each call Members makes, so that a paused host
// costs that much and not the whole walk.
const membersCallTimeout = 2 * time.Second

// Members returns every vnode of the ring's live hosts: starting from
// seeds, it asks each host it learns of for its own vnodes, and each of
// those vnodes for its predecessor and successors, whose hosts it asks in
// turn. Unlike a walk along successor lists it does not depend on those
// lists being complete (they are not, while the ring settles after a
// change); it costs a call per vnode. Hosts that do not answer are left
// out.
func Members(ctx context.Context, tr Transport, seeds []string) ([]Ref, error) {
	queue := slices.Clone(seeds)
	asked := map[string]bool{}
	var out []Ref
	for len(queue) > 0 && ctx.Err() == nil {
		host := queue[0]
		queue = queue[1:]
		if asked[host] {
			continue
		}
		asked[host] = true
		cctx, cancel := context.WithTimeout(ctx, membersCallTimeout)
		own, err := tr.VNodes(cctx, host)
		cancel()
		if err != nil {
			continue
		}
		out = append(out, own...)
		for _, v := range own {
			cctx, cancel := context.WithTimeout(ctx, membersCallTimeout)
			st, err := tr.GetState(cctx, v)
			cancel()
			if err != nil {
				continue
			}
			for _, r := range append(st.Succs, st.Pred) {
				if !r.IsZero() && !asked[r.Addr] {
					queue = append(queue, r.Addr)
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("ring: no member answered among %v: %w", seeds, ErrNotMember)
	}
	slices.SortFunc(out, func(a, b Ref) int { return a.ID.Cmp(b.ID) })
	return slices.CompactFunc(out, func(a, b Ref) bool { return a.ID == b.ID }), nil
}
