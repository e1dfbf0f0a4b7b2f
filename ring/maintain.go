package ring

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"
)

// Tick runs one round of maintenance on every vnode of the host, in id
// order: check-predecessor, stabilise (which ends by asking the successor to
// rectify), and the refresh of one finger.
func (h *Host) Tick(ctx context.Context) {
	h.mu.Lock()
	h.ticks++
	merge := h.ticks%mergeEvery == 0
	h.mu.Unlock()
	for _, id := range h.ids() {
		h.checkPredecessor(ctx, id)
		h.stabilize(ctx, id)
		h.fixFinger(ctx, id)
	}
	if merge {
		h.mergeCheck(ctx)
	}
}

// mergeCheck repairs a ring that a network partition split in two. Each
// side's maintenance drops the other side's vnodes and closes into a ring
// of its own, and no Chord rule joins two complete rings. So every few
// rounds the host takes, in turn, a host it has reached before that none
// of its vnodes points to, and looks one of its own vnodes up through it.
// A successor found that way that lies closer than the vnode's own is
// adopted by the stabilise rule: only after its list is fetched, which
// proves it alive. Stabilisation then merges the rest.
func (h *Host) mergeCheck(ctx context.Context) {
	h.mu.Lock()
	inView := map[string]bool{h.cfg.Addr: true}
	for _, v := range h.vnodes {
		inView[v.pred.Addr] = true
		for _, r := range v.succs {
			inView[r.Addr] = true
		}
	}
	var outside []string
	for a := range h.seen {
		if !inView[a] && h.ticks-h.failed[a] >= suspectTicks {
			outside = append(outside, a)
		}
	}
	if len(outside) == 0 || len(h.order) == 0 {
		h.mu.Unlock()
		return
	}
	slices.Sort(outside)
	via := outside[h.mergeNext%len(outside)]
	id := h.order[h.mergeNext%len(h.order)]
	h.mergeNext++
	h.mu.Unlock()

	cctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
	starts, err := h.transport(via).VNodes(cctx, via)
	cancel()
	h.heard(via, !errors.Is(err, ErrUnreachable))
	if err != nil || len(starts) == 0 {
		return
	}
	succs, _, err := h.findSuccessor(ctx, starts, id)
	if err != nil {
		return
	}
	v, ok := h.snapshot(id)
	if !ok || len(v.succs) == 0 {
		return
	}
	for _, s := range succs {
		if s.ID == id || !between(id, s.ID, v.succs[0].ID) {
			continue
		}
		st, err := h.getState(ctx, s)
		if err != nil {
			continue
		}
		list := h.trim(v.self, append([]Ref{s}, st.Succs...))
		h.setSuccs(id, v.succs, list)
		h.log.Info("merged with a ring found outside this one", "vnode", v.self, "via", via, "succ", s)
		first := list[0]
		h.call(ctx, first, func(ctx context.Context, t Transport) error { return t.Rectify(ctx, first, v.self) })
		return
	}
}

// snapshot returns a copy of a vnode's state, or false if the host no
// longer runs it.
func (h *Host) snapshot(id ID) (vnode, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.vnodes[id]
	if !ok {
		return vnode{}, false
	}
	c := *v
	c.succs = slices.Clone(v.succs)
	return c, true
}

// update applies fn to a vnode under the lock and reports the change, if
// fn's result says there was one.
func (h *Host) update(id ID, fn func(v *vnode) bool) {
	h.mu.Lock()
	v, ok := h.vnodes[id]
	if !ok || !fn(v) {
		h.mu.Unlock()
		return
	}
	c := v.change()
	h.mu.Unlock()
	h.notify([]Change{c})
}

// checkPredecessor clears the predecessor if it is dead, so that the next
// rectify can install a live one. A predecessor that rectified the vnode in
// the last two rounds is alive, and is not pinged.
func (h *Host) checkPredecessor(ctx context.Context, id ID) {
	v, ok := h.snapshot(id)
	if !ok || v.pred.IsZero() {
		return
	}
	h.mu.Lock()
	recent := h.ticks-v.predHeard <= 2
	h.mu.Unlock()
	if recent {
		return
	}
	if err := h.ping(ctx, v.pred); err != nil {
		h.forget(v.pred)
		h.update(id, func(v2 *vnode) bool {
			if v2.pred != v.pred {
				return false
			}
			v2.pred = Ref{}
			return true
		})
		h.log.Info("predecessor dead", "vnode", v.self, "pred", v.pred, "err", err)
	}
}

// stabilize refreshes a vnode's successor list from its first live
// successor, adopts a closer successor only after fetching that vnode's own
// list (which proves it alive), and asks the successor to rectify.
func (h *Host) stabilize(ctx context.Context, id ID) {
	v, ok := h.snapshot(id)
	if !ok {
		return
	}
	succs := v.succs
	for len(succs) > 0 {
		s := succs[0]
		st, err := h.getState(ctx, s)
		if err != nil {
			// The first successor is dead: drop it and try the next.
			h.log.Info("successor dead", "vnode", v.self, "succ", s, "err", err)
			h.forget(s)
			succs = succs[1:]
			continue
		}
		list := h.trim(v.self, append([]Ref{s}, st.Succs...))
		if p := st.Pred; !p.IsZero() && between(v.self.ID, p.ID, s.ID) {
			if pst, err := h.getState(ctx, p); err == nil {
				list = h.trim(v.self, append([]Ref{p}, pst.Succs...))
			}
		}
		h.setSuccs(id, v.succs, list)
		first := list[0]
		if err := h.call(ctx, first, func(ctx context.Context, t Transport) error { return t.Rectify(ctx, first, v.self) }); err != nil {
			h.log.Debug("rectify failed", "vnode", v.self, "succ", first, "err", err)
		}
		return
	}
	// Every successor is dead: the ring's failure assumption was broken
	// (a list still short after a restart, say, when its host died).
	// Restart from the closest live vnode this host knows of past this
	// one; stabilising from there walks back to the true successor
	// through predecessors.
	if next := h.closestLive(ctx, v.self); !next.IsZero() {
		h.log.Warn("every successor dead; going on from the closest live vnode known", "vnode", v.self, "next", next)
		h.setSuccs(id, v.succs, []Ref{next})
		return
	}
	h.log.Error("no live successor", "vnode", v.self, "tried", len(v.succs))
}

// closestLive returns the live vnode that follows self most closely among
// those this host's vnodes know (themselves, their predecessors, successor
// lists and fingers), or the zero Ref.
func (h *Host) closestLive(ctx context.Context, self Ref) Ref {
	h.mu.Lock()
	seen := map[ID]Ref{}
	for _, v := range h.vnodes {
		for _, r := range append(append([]Ref{v.self, v.pred}, v.succs...), v.fingers[v.fingerBase:]...) {
			if !r.IsZero() && r.ID != self.ID {
				seen[r.ID] = r
			}
		}
	}
	h.mu.Unlock()
	cands := slices.Collect(maps.Values(seen))
	slices.SortFunc(cands, func(a, b Ref) int { return distance(self.ID, a.ID).Cmp(distance(self.ID, b.ID)) })
	for _, r := range cands {
		if r.Addr == h.cfg.Addr || h.ping(ctx, r) == nil {
			return r
		}
	}
	return Ref{}
}

// setSuccs installs list as the successor list if the vnode's list is still
// old (no concurrent change came in between).
func (h *Host) setSuccs(id ID, old, list []Ref) {
	if len(list) == 0 {
		return
	}
	h.update(id, func(v *vnode) bool {
		if !slices.Equal(v.succs, old) || slices.Equal(v.succs, list) {
			return false
		}
		v.succs = list
		return true
	})
}

// fixFinger refreshes one finger: finger i is the successor of id+2^i.
// Fingers below fingerBase point inside the successor list, which lookups
// use directly, so only fingerBase..IDBits-1 are kept; they are refreshed
// bottom up, so each lookup can use the finger found just before it.
func (h *Host) fixFinger(ctx context.Context, id ID) {
	v, ok := h.snapshot(id)
	if !ok || len(v.succs) == 0 {
		return
	}
	i := v.nextFinger
	if i == 0 { // a new vnode
		i = v.firstFinger()
	}
	succs, _, err := h.findSuccessor(ctx, []Ref{v.self}, v.self.ID.addPow2(i))
	h.mu.Lock()
	defer h.mu.Unlock()
	v2, ok := h.vnodes[id]
	if !ok {
		return
	}
	if err == nil {
		v2.fingers[i] = succs[0]
	}
	v2.nextFinger = i + 1
	if v2.nextFinger == IDBits {
		// Start the next round at the first finger past the successor list.
		base := v2.firstFinger()
		clear(v2.fingers[:base])
		v2.fingerBase, v2.nextFinger = base, base
	}
}

// firstFinger returns the lowest finger that points past the successor
// list: the first i with id+2^i beyond the list's last entry.
func (v *vnode) firstFinger() int {
	return min(distance(v.self.ID, v.succs[len(v.succs)-1].ID).bitLen(), IDBits-1)
}

// forget drops a dead vnode from every finger table of the host. Successor
// lists and predecessors are left to the maintenance rules.
func (h *Host) forget(dead Ref) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, v := range h.vnodes {
		for i := v.fingerBase; i < IDBits; i++ {
			if v.fingers[i] == dead {
				v.fingers[i] = Ref{}
			}
		}
	}
}

// HandleVNodes returns the host's vnodes, or ErrNotMember before it joins.
func (h *Host) HandleVNodes() ([]Ref, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.order) == 0 {
		return nil, ErrNotMember
	}
	refs := make([]Ref, len(h.order))
	for i, id := range h.order {
		refs[i] = h.vnodes[id].self
	}
	return refs, nil
}

// HandlePing succeeds if the host runs the vnode.
func (h *Host) HandlePing(target ID) error {
	_, ok := h.snapshot(target)
	if !ok {
		return ErrNoVNode
	}
	return nil
}

// HandleGetState returns the vnode's predecessor and successor list.
func (h *Host) HandleGetState(target ID) (State, error) {
	v, ok := h.snapshot(target)
	if !ok {
		return State{}, ErrNoVNode
	}
	return State{Pred: v.pred, Succs: v.succs}, nil
}

// HandleRectify considers from as the vnode's predecessor: it is adopted if
// the vnode has none, if from lies between the current one and the vnode,
// or if the current one is dead. from called, so it is alive.
func (h *Host) HandleRectify(ctx context.Context, target ID, from Ref) error {
	v, ok := h.snapshot(target)
	if !ok {
		return ErrNoVNode
	}
	if from.Addr != h.cfg.Addr {
		h.heard(from.Addr, true)
	}
	if from.ID == target {
		return nil
	}
	if v.pred == from {
		h.mu.Lock()
		if v2, ok := h.vnodes[target]; ok && v2.pred == from {
			v2.predHeard = h.ticks
		}
		h.mu.Unlock()
		return nil
	}
	adopt := v.pred.IsZero() || between(v.pred.ID, from.ID, target)
	if !adopt && h.ping(ctx, v.pred) != nil {
		adopt = true
	}
	if adopt {
		h.update(target, func(v2 *vnode) bool {
			if v2.pred != v.pred {
				return false
			}
			v2.pred = from
			return true
		})
	}
	return nil
}

// maxCandidates bounds the candidates one Next reply carries.
const maxCandidates = 8

// HandleNext answers one hop of a lookup of key at the vnode.
func (h *Host) HandleNext(target ID, key ID) (NextReply, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.vnodes[target]
	if !ok {
		return NextReply{}, ErrNoVNode
	}
	if len(v.succs) == 0 {
		return NextReply{}, ErrLookup
	}
	if betweenRight(target, key, v.succs[0].ID) {
		return NextReply{Found: true, Succs: slices.Clone(v.succs)}, nil
	}
	// Candidates are the fingers and successors that precede the key,
	// closest to the key (farthest clockwise from this vnode) first.
	type cand struct {
		dist ID
		ref  Ref
	}
	cands := make([]cand, 0, 32)
	add := func(r Ref) {
		if r.IsZero() || !between(target, r.ID, key) {
			return
		}
		for _, c := range cands {
			if c.ref.ID == r.ID {
				return
			}
		}
		cands = append(cands, cand{distance(target, r.ID), r})
	}
	for i := IDBits - 1; i >= v.fingerBase; i-- {
		if f := v.fingers[i]; i == IDBits-1 || f != v.fingers[i+1] { // skip runs of equal fingers
			add(f)
		}
	}
	for _, r := range v.succs {
		add(r)
	}
	slices.SortFunc(cands, func(a, b cand) int { return b.dist.Cmp(a.dist) })
	refs := make([]Ref, min(len(cands), maxCandidates))
	for i := range refs {
		refs[i] = cands[i].ref
	}
	return NextReply{Candidates: refs}, nil
}

// HandleLeaving closes the gap a leaving neighbour leaves: a vnode whose
// first successor leaves takes the leaver's successor list, once its first
// entry answers; a vnode whose predecessor leaves takes the leaver's
// predecessor, once it answers.
func (h *Host) HandleLeaving(ctx context.Context, target ID, note LeaveNote) error {
	v, ok := h.snapshot(target)
	if !ok {
		return ErrNoVNode
	}
	if len(v.succs) > 0 && v.succs[0] == note.Leaving {
		list := h.trim(v.self, note.Succs)
		if len(list) > 0 && h.ping(ctx, list[0]) == nil {
			h.setSuccs(target, v.succs, list)
		} else {
			h.setSuccs(target, v.succs, v.succs[1:])
		}
	}
	if v.pred == note.Leaving {
		newPred := note.Pred
		if newPred.ID == target || (!newPred.IsZero() && h.ping(ctx, newPred) != nil) {
			newPred = Ref{}
		}
		h.update(target, func(v2 *vnode) bool {
			if v2.pred != note.Leaving {
				return false
			}
			v2.pred = newPred
			return true
		})
	}
	h.forget(note.Leaving)
	h.mu.Lock()
	h.left[note.Leaving.Addr] = time.Now()
	h.mu.Unlock()
	return nil
}
