package ring

import (
	"context"
	"fmt"
	"slices"
)

// maxHops bounds the hops of one lookup. Every hop moves strictly closer to
// the key, so a lookup in a correct ring of V vnodes takes O(log V) hops;
// the bound only stops a lookup through inconsistent state.
const maxHops = 128

// findSuccessor looks key up iteratively, starting from the first live
// vnode of starts. It returns the successor list of the vnode that
// precedes key (whose first entry is key's successor) and the number of
// hops: vnodes asked. A vnode that does not answer is skipped for the next
// best candidate.
func (h *Host) findSuccessor(ctx context.Context, starts []Ref, key ID) ([]Ref, int, error) {
	stack := [][]Ref{slices.Clone(starts)}
	// asked: another host's vnode answers one lookup once; asking it again
	// down another branch would give the same answer, and with dead
	// candidates about (a host just killed) such repeats can use up every
	// hop. This host's own vnodes are asked again: forgetting a dead vnode
	// changes their answer.
	asked := map[ID]bool{}
	hops := 0
	for hops < maxHops {
		top := len(stack) - 1
		if top < 0 {
			return nil, hops, fmt.Errorf("%w: no live vnode to ask for %s", ErrLookup, key.Short())
		}
		if len(stack[top]) == 0 {
			stack = stack[:top]
			continue
		}
		cur := stack[top][0]
		stack[top] = stack[top][1:]
		if asked[cur.ID] {
			continue
		}
		if cur.Addr != h.cfg.Addr {
			asked[cur.ID] = true
		}
		hops++
		var reply NextReply
		err := h.call(ctx, cur, func(ctx context.Context, t Transport) (err error) {
			reply, err = t.Next(ctx, cur, key)
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil, hops, fmt.Errorf("%w: %w", ErrLookup, ctx.Err())
			}
			h.forget(cur)
			continue
		}
		if reply.Found && len(reply.Succs) > 0 {
			return reply.Succs, hops, nil
		}
		stack = append(stack, reply.Candidates)
	}
	return nil, hops, fmt.Errorf("%w: more than %d hops for %s", ErrLookup, maxHops, key.Short())
}

// Result is the placement of a key.
type Result struct {
	// Key is the key's position on the circle.
	Key ID `json:"hash"`
	// Replicas are the vnodes that hold the key, on distinct hosts, in ring
	// order; the first is the key's leader.
	Replicas []Ref `json:"replicas"`
	// Hops is the number of vnodes the lookup asked.
	Hops int `json:"hops"`
}

// Leader returns the first replica.
func (r Result) Leader() Ref { return firstOf(r.Replicas) }

// Lookup places the key at position key: its successor vnode, the leader,
// followed by the next vnodes clockwise on hosts not yet listed, n in all.
// It returns fewer than n when the ring has fewer hosts.
func (h *Host) Lookup(ctx context.Context, key ID, n int) (Result, error) {
	starts, err := h.HandleVNodes()
	if err != nil {
		return Result{}, err
	}
	succs, hops, err := h.findSuccessor(ctx, starts, key)
	if err != nil {
		return Result{}, err
	}
	res := Result{Key: key, Hops: hops}
	hosts := h.suspects() // hosts that could not be reached lately hold no replicas
	seen := map[ID]bool{}
	origin := succs[0].ID
	// Walk the successor lists clockwise until n hosts are covered or the
	// walk comes back to where it started.
	for {
		added := false
		for _, r := range succs {
			if r.ID == origin && len(seen) > 0 {
				return res, nil // wrapped around the whole ring
			}
			if seen[r.ID] {
				continue
			}
			seen[r.ID], added = true, true
			if !hosts[r.Addr] && len(res.Replicas) < n {
				hosts[r.Addr] = true
				res.Replicas = append(res.Replicas, r)
			}
		}
		if len(res.Replicas) == n || !added {
			return res, nil
		}
		if hops >= 2*maxHops {
			return Result{}, fmt.Errorf("%w: more than %d hops extending the replica set of %s", ErrLookup, 2*maxHops, key.Short())
		}
		// Extend from the farthest entry that answers: an unreachable one
		// only costs going back along the list.
		var next []Ref
		for i := len(succs) - 1; i >= 0 && next == nil; i-- {
			st, gerr := h.getState(ctx, succs[i])
			hops++
			if gerr == nil {
				next = st.Succs
			}
			err = gerr
		}
		res.Hops = hops
		if next == nil {
			return Result{}, fmt.Errorf("%w: extending the replica set: %w", ErrLookup, err)
		}
		succs = next
	}
}

// VNodeStatus is one vnode's view of its neighbourhood.
type VNodeStatus struct {
	Self Ref `json:"self"`
	// Pred is the zero Ref when the vnode has no predecessor.
	Pred  Ref   `json:"pred"`
	Succs []Ref `json:"succs"`
	// Fingers are the distinct finger entries, each with the lowest index
	// i (finger i is the successor of Self + 2^i) that points to it.
	Fingers []Finger `json:"fingers"`
}

// Finger is one finger table entry.
type Finger struct {
	Index int `json:"index"`
	Ref   Ref `json:"ref"`
}

// Status returns the state of every vnode of the host, in id order.
func (h *Host) Status() []VNodeStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]VNodeStatus, 0, len(h.order))
	for _, id := range h.order {
		v := h.vnodes[id]
		st := VNodeStatus{Self: v.self, Pred: v.pred, Succs: slices.Clone(v.succs)}
		seen := map[ID]bool{}
		for i := v.fingerBase; i < IDBits; i++ {
			if f := v.fingers[i]; !f.IsZero() && !seen[f.ID] {
				seen[f.ID] = true
				st.Fingers = append(st.Fingers, Finger{Index: i, Ref: f})
			}
		}
		out = append(out, st)
	}
	return out
}

// KnownHosts returns the addresses of the other hosts this host's vnodes
// currently point to, sorted: a rejoin can start from any of them.
func (h *Host) KnownHosts() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := map[string]bool{}
	add := func(r Ref) {
		if !r.IsZero() && r.Addr != h.cfg.Addr {
			set[r.Addr] = true
		}
	}
	for _, v := range h.vnodes {
		add(v.pred)
		for _, s := range v.succs {
			add(s)
		}
		for _, f := range v.fingers {
			add(f)
		}
	}
	out := make([]string, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}
