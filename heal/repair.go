package heal

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/nodestatus"
	"github.com/difuse/difuse/txlog"
)

// heal compares this host's items of one kind with the other replicas of
// each arc it holds, repairs what they lack, and hands off what sits on
// arcs it no longer holds.
func (h *Healer) heal(ctx context.Context, p *pass, kind Kind, ix *index) error {
	byArc := make([][]entry, len(p.arcs))
	for _, e := range ix.items {
		i := p.arcOf(e.pos)
		byArc[i] = append(byArc[i], e)
	}
	// Anti-entropy with each other replica of the arcs this host holds.
	peers := map[string][]int{}
	for i, set := range p.sets {
		if !p.mine(i) {
			continue
		}
		for _, m := range set {
			if m != p.self {
				peers[m] = append(peers[m], i)
			}
		}
	}
	var strays []int
	for i, items := range byArc {
		if len(items) > 0 && !p.mine(i) {
			strays = append(strays, i)
		}
	}
	steps, done := len(peers)+len(strays), 0
	step := func() {
		done++
		p.progress(float64(done) / float64(steps))
	}
	for _, peer := range slices.Sorted(maps.Keys(peers)) {
		step()
		if err := h.compare(ctx, p, kind, peer, peers[peer], byArc); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			h.fail(fmt.Errorf("heal: %s with %s: %w", kind, peer, err))
			p.pending++
		}
	}
	// Partitions level everywhere whose replica set in force is not yet the
	// ring's (a member died, say): their leader moves it.
	if kind == KindPartition {
		for i, items := range byArc {
			if !p.mine(i) {
				continue
			}
			for _, e := range items {
				if txlog.NextConfig(e.config, p.sets[i], h.cfg.Replicas) == nil || p.synced[e.Key] {
					continue
				}
				p.missing(kind, 1)
				resp, err := h.sync(ctx, p, e.Key, p.sets[i])
				switch {
				case err != nil:
					if ctx.Err() != nil {
						return ctx.Err()
					}
					h.fail(fmt.Errorf("heal: %w", err))
					p.pending++
				case txlog.NextConfig(resp.Members, p.sets[i], h.cfg.Replicas) != nil:
					p.pending++
				default:
					p.changed++
				}
			}
		}
	}
	// Hand-off of what the ring places elsewhere.
	for _, i := range strays {
		step()
		if err := h.handOff(ctx, p, kind, p.sets[i], byArc[i]); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			h.fail(fmt.Errorf("heal: hand off %s: %w", kind, err))
			p.pending++
		}
	}
	return nil
}

// compare checks the arcs this host shares with peer: where their digests
// differ, it lists the peer's items and repairs those the peer lacks or
// holds in another version. What the peer holds and this host lacks, the
// peer's own pass repairs.
func (h *Healer) compare(ctx context.Context, p *pass, kind Kind, peer string, arcs []int, byArc [][]entry) error {
	want := make([]Arc, len(arcs))
	for j, i := range arcs {
		want[j] = p.arcs[i]
	}
	cctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
	theirs, err := h.peers.Digests(cctx, peer, kind, want)
	cancel()
	if err != nil {
		return err
	}
	if len(theirs) != len(arcs) {
		return fmt.Errorf("%d digests for %d arcs", len(theirs), len(arcs))
	}
	h.count(func(s *nodestatus.Heal) { s.ArcsCompared += int64(len(arcs)) })
	for j, i := range arcs {
		var ours Digest
		for _, e := range byArc[i] {
			ours.add(e.Item)
		}
		if ours == theirs[j] {
			continue
		}
		h.count(func(s *nodestatus.Heal) { s.ArcsDiffered++ })
		have, err := h.listPeer(ctx, peer, kind, p.arcs[i])
		if err != nil {
			return err
		}
		var lack []entry
		for _, e := range byArc[i] {
			if d, ok := have[e.Key]; !ok || d != e.Digest {
				lack = append(lack, e)
			}
		}
		p.missing(kind, len(lack))
		if err := h.give(ctx, p, kind, peer, p.sets[i], lack); err != nil {
			return err
		}
	}
	return nil
}

// listPeer returns the peer's items on an arc, key → digest.
func (h *Healer) listPeer(ctx context.Context, peer string, kind Kind, arc Arc) (map[string][32]byte, error) {
	out := map[string][32]byte{}
	after := ""
	for {
		cctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
		items, more, err := h.peers.Items(cctx, peer, kind, arc, after, MaxItems)
		cancel()
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			out[it.Key] = it.Digest
			after = it.Key
		}
		if !more || len(items) == 0 {
			return out, nil
		}
	}
}

// give repairs items the peer lacks: blocks are sent, partitions synced by
// their leader.
func (h *Healer) give(ctx context.Context, p *pass, kind Kind, peer string, set []string, items []entry) error {
	if kind == KindPartition {
		for _, e := range items {
			resp, err := h.sync(ctx, p, e.Key, set)
			if err != nil {
				return err
			}
			// Level already (the peer's listing was older than the sync)
			// is no change.
			if resp.Tx.Hash != e.Digest || resp.Synced < len(resp.Members) || !sameMembers(resp.Members, set) {
				p.changed++
			}
		}
		return nil
	}
	hashes := make([]blockstore.Hash, len(items))
	for i, e := range items {
		hashes[i] = blockstore.Hash(e.Digest)
	}
	return h.sendBlocks(ctx, p, peer, hashes)
}

// sync has the partition's leader (first of set) bring its replicas level
// and onto the ring's hosts.
func (h *Healer) sync(ctx context.Context, p *pass, name string, set []string) (txlog.Response, error) {
	if err := h.syncs.Wait(ctx); err != nil {
		return txlog.Response{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
	defer cancel()
	resp, err := h.logs.Sync(cctx, name, set[0])
	if err != nil {
		return resp, fmt.Errorf("sync %q: %w", name, err)
	}
	if !p.synced[name] {
		p.synced[name] = true
		h.count(func(s *nodestatus.Heal) { s.PartitionsSynced++ })
	}
	return resp, nil
}

// noteWait reports whether a hand-off that waits on partition name is
// logged now: once a minute per partition, so a wait that does not end
// shows in the log without filling it.
func (h *Healer) noteWait(name string) bool {
	now := time.Now() // not h.clock: a node's clock may jump back for good
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.waits[name]) < time.Minute {
		return false
	}
	if h.waits == nil {
		h.waits = map[string]time.Time{}
	}
	h.waits[name] = now
	return true
}

func sameMembers(a, b []string) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(m string) bool { return !slices.Contains(b, m) })
}

// sendBlocks sends the peer those of the blocks it does not hold.
func (h *Healer) sendBlocks(ctx context.Context, p *pass, peer string, hashes []blockstore.Hash) error {
	for start := 0; start < len(hashes); start += MaxItems {
		batch := hashes[start:min(start+MaxItems, len(hashes))]
		cctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
		has, err := h.blocks.HeldBy(cctx, peer, batch)
		cancel()
		if err != nil {
			return err
		}
		for i, hash := range batch {
			if has[i] {
				continue
			}
			if err := h.sendBlock(ctx, peer, hash); err != nil {
				return err
			}
			p.changed++
		}
	}
	return nil
}

func (h *Healer) sendBlock(ctx context.Context, peer string, hash blockstore.Hash) error {
	cctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
	n, err := h.blocks.Send(cctx, peer, hash)
	cancel()
	if errors.Is(err, blockstore.ErrNotFound) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return err // a damaged copy is the scrubber's
	}
	h.count(func(s *nodestatus.Heal) { s.BlocksSent++; s.BytesSent += int64(n) })
	return h.bytes.WaitN(ctx, n) // the rate, kept over the blocks sent
}
