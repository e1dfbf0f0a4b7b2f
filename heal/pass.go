package heal

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/difuse/difuse/nodestatus"
	"github.com/difuse/difuse/ring"
)

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
