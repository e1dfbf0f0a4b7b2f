package heal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/nodestatus"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/txlog"
)

// handOff brings items of an arc this host no longer holds to the arc's
// replica set, then drops them here: a partition once its leader has moved
// its replica set off this host and every member holds the log; a block
// once every member holds it.
func (h *Healer) handOff(ctx context.Context, p *pass, kind Kind, set []string, items []entry) error {
	want := min(h.cfg.Replicas, p.hosts)
	if kind == KindPartition {
		for _, e := range items {
			resp, err := h.sync(ctx, p, e.Key, set)
			if err != nil {
				return err
			}
			if !p.stable && !p.leaving {
				p.pending++
				continue
			}
			if slices.Contains(resp.Members, p.self) || resp.Synced < len(resp.Members) || len(resp.Members) < want {
				if h.noteWait(e.Key) {
					h.log.Info("partition not handed off yet", "partition", e.Key, "members", resp.Members, "synced", resp.Synced, "want", want)
				}
				p.pending++
				continue
			}
			if err := h.logs.Drop(e.Key); err != nil {
				if errors.Is(err, txlog.ErrLeading) {
					p.pending++
					continue
				}
				return err
			}
			h.mu.Lock()
			delete(h.waits, e.Key)
			h.mu.Unlock()
			p.changed++
			h.count(func(s *nodestatus.Heal) { s.PartitionsDropped++ })
		}
		return nil
	}
	hashes := make([]blockstore.Hash, len(items))
	for i, e := range items {
		hashes[i] = blockstore.Hash(e.Digest)
	}
	held := 0
	for _, m := range set {
		if m == p.self {
			continue
		}
		if err := h.sendBlocks(ctx, p, m, hashes); err != nil {
			h.fail(fmt.Errorf("heal: hand off blocks to %s: %w", m, err))
			continue
		}
		held++
	}
	if held < want || (!p.stable && !p.leaving) {
		p.pending += len(hashes)
		return nil
	}
	for _, hash := range hashes {
		if !p.leaving {
			res, err := h.placer.Lookup(ctx, ring.ID(hash), h.cfg.Replicas)
			if err != nil || slices.ContainsFunc(res.Replicas, func(r ring.Ref) bool { return r.Addr == p.self }) {
				p.pending++
				continue // the ring does not agree yet
			}
		}
		if err := h.blocks.Drop(hash); err != nil {
			return err
		}
		p.changed++
		h.count(func(s *nodestatus.Heal) { s.BlocksDropped++ })
	}
	return nil
}

// Leave hands off everything this host holds, pass after pass, until it
// holds nothing or ctx ends. Call it once the host has left the ring, so
// that members returns the ring without it.
func (h *Healer) Leave(ctx context.Context) error {
	h.mu.Lock()
	h.leaving = true
	h.mu.Unlock()
	for {
		if _, err := h.Pass(ctx); err != nil {
			if ctx.Err() != nil {
				return err
			}
			h.fail(err)
		}
		parts, blocks, err := h.held()
		if err != nil {
			return err
		}
		if parts == 0 && blocks == 0 {
			return nil
		}
		h.log.Info("handing off", "partitions", parts, "blocks", blocks)
		select {
		case <-ctx.Done():
			return fmt.Errorf("heal: %d partitions and %d blocks not handed off: %w", parts, blocks, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// held counts the partitions and blocks this host holds.
func (h *Healer) held() (parts, blocks int, err error) {
	for _, kind := range []Kind{KindPartition, KindBlock} {
		ix, err := h.list(kind, true)
		if err != nil {
			return 0, 0, err
		}
		if kind == KindPartition {
			parts = len(ix.items)
		} else {
			blocks = len(ix.items)
		}
	}
	return parts, blocks, nil
}
