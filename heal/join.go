package heal

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/nodestatus"
	"github.com/difuse/difuse/ring"
)

// Join copies onto this host, before it joins the ring, what the ring
// would place on it once its vnodes mine are in: for each arc it will
// hold, it lists the items of the hosts that hold that arc now, fetches
// the blocks it lacks and seeds the partitions' committed logs
// (txlog.Service.Seed). Meanwhile those hosts go on serving; what is
// written after the copy reaches this host when the leaders add it to
// their replica sets. Items it cannot copy are left to the takeover and
// the passes; Join returns how many it copied and how many it could not.
func (h *Healer) Join(ctx context.Context, current, mine []ring.Ref) (copied, missed int) {
	if len(current) == 0 {
		return 0, 0
	}
	var old ring.Cache
	old.Update(current)
	p := h.plan(append(slices.Clone(current), mine...), false)
	var arcs []int
	for i, set := range p.sets {
		if slices.Contains(set, h.cfg.Addr) {
			arcs = append(arcs, i)
		}
	}
	h.count(func(s *nodestatus.Heal) { s.State, s.Progress = "joining", 0 })
	defer h.count(func(s *nodestatus.Heal) { s.State = "idle" })
	for n, i := range arcs {
		res, _ := old.Lookup(p.arcs[i].Hi, h.cfg.Replicas)
		var holders []string
		for _, r := range res.Replicas {
			holders = append(holders, r.Addr)
		}
		c, m := h.copyArc(ctx, p.arcs[i], holders)
		copied, missed = copied+c, missed+m
		h.count(func(s *nodestatus.Heal) { s.Progress = float64(n+1) / float64(len(arcs)) })
	}
	return copied, missed
}

// copyArc copies the items the holders hold on one arc; holders[0] leads
// it.
func (h *Healer) copyArc(ctx context.Context, arc Arc, holders []string) (copied, missed int) {
	if len(holders) == 0 {
		return 0, 0
	}
	for _, kind := range []Kind{KindPartition, KindBlock} {
		where := map[string][]string{} // key → holders that list it
		for _, holder := range holders {
			items, err := h.listPeer(ctx, holder, kind, arc)
			if err != nil {
				h.log.Debug("cannot list an arc's items", "holder", holder, "err", err)
				continue
			}
			for key := range items {
				where[key] = append(where[key], holder)
			}
		}
		for _, key := range slices.Sorted(maps.Keys(where)) {
			if err := h.copyItem(ctx, kind, key, holders[0], where[key]); err != nil {
				if ctx.Err() != nil {
					return copied, missed
				}
				h.log.Debug("cannot copy an item before joining", "kind", kind, "err", err)
				missed++
				continue
			}
			copied++
		}
	}
	return copied, missed
}

// copyItem copies one partition (seeded through its leader) or block
// (from the first holder that gives a sound copy).
func (h *Healer) copyItem(ctx context.Context, kind Kind, key, leader string, holders []string) error {
	cctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
	defer cancel()
	if kind == KindPartition {
		if err := h.syncs.Wait(ctx); err != nil {
			return err
		}
		return h.logs.Seed(cctx, key, leader)
	}
	hash, err := blockstore.HashFromBytes([]byte(key))
	if err != nil {
		return err
	}
	if ok, err := h.blocks.Holds(hash); err != nil || ok {
		return err
	}
	lastErr := fmt.Errorf("block %s: no host holds it", hash)
	for _, from := range holders {
		n, err := h.blocks.Fetch(cctx, from, hash)
		if err == nil {
			return h.bytes.WaitN(ctx, n) // the rate, kept over the blocks fetched
		}
		lastErr = err
	}
	return lastErr
}
