package ring

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// Cache is a client's copy of the ring's membership, for routing a key to
// its leader in one hop. It can be stale: a node receiving a request checks
// Leads, and on a miss the client refreshes the cache (Walk) or falls back to
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

// Walk collects the ring's membership by following successor lists from
// the vnodes of the host at seed, until it comes back to where it started;
// where a vnode does not answer it goes on from the entry before it.
// It costs about V/len(successor list) calls for V vnodes.
func Walk(ctx context.Context, tr Transport, seed string) ([]Ref, error) {
	starts, err := tr.VNodes(ctx, seed)
	if err != nil {
		return nil, fmt.Errorf("ring: walk from %s: %w", seed, err)
	}
	if len(starts) == 0 {
		return nil, fmt.Errorf("ring: walk from %s: %w", seed, ErrNotMember)
	}
	seen := map[ID]bool{starts[0].ID: true}
	refs := []Ref{starts[0]}
	cur := starts[0]
	var back []Ref // earlier entries of the last list, for a vnode that does not answer
	for {
		st, err := tr.GetState(ctx, cur)
		if err != nil && len(back) > 0 && ctx.Err() == nil {
			cur, back = back[len(back)-1], back[:len(back)-1]
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("ring: walk at %s: %w", cur, err)
		}
		if len(st.Succs) == 0 {
			return nil, fmt.Errorf("ring: walk at %s: %w: no successors", cur, ErrLookup)
		}
		added := 0
		for _, r := range st.Succs {
			if r.ID == starts[0].ID {
				return refs, nil // round the ring
			}
			if !seen[r.ID] {
				seen[r.ID] = true
				refs = append(refs, r)
				added++
			}
		}
		if added == 0 {
			return refs, nil // no further: a ring still settling
		}
		cur, back = st.Succs[len(st.Succs)-1], st.Succs[:len(st.Succs)-1]
	}
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

// Members returns every vnode of the ring: it walks the ring from the
// first of seeds that answers, then asks every host the walk met, and
// every seed, for its own vnodes, so that a walk cut short by a ring still
// settling after a change misses no vnode of a host it met. Hosts that do
// not answer keep the vnodes the walk found for them.
func Members(ctx context.Context, tr Transport, seeds []string) ([]Ref, error) {
	var walked []Ref
	err := ErrNotMember
	for _, s := range seeds {
		if walked, err = Walk(ctx, tr, s); err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	hosts := slices.Clone(seeds)
	for _, r := range walked {
		hosts = append(hosts, r.Addr)
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	out := slices.Clone(walked)
	for _, h := range hosts {
		if own, err := tr.VNodes(ctx, h); err == nil {
			out = append(out, own...)
		}
	}
	slices.SortFunc(out, func(a, b Ref) int { return a.ID.Cmp(b.ID) })
	return slices.CompactFunc(out, func(a, b Ref) bool { return a.ID == b.ID }), nil
}
