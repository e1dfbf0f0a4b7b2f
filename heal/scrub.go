package heal

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/nodestatus"
	"github.com/difuse/difuse/ring"
)

// scrub re-hashes up to ScrubBytes of local blocks, going on from where the
// last pass stopped, and replaces a damaged copy with a sound one from
// another replica.
func (h *Healer) scrub(ctx context.Context) error {
	if h.cfg.ScrubBytes == NoScrub {
		return nil
	}
	ix, err := h.list(KindBlock, false)
	if err != nil || len(ix.items) == 0 {
		return err
	}
	h.mu.Lock()
	from := h.scrubAt
	h.mu.Unlock()
	start := sort.Search(len(ix.byHash), func(i int) bool { return ring.ID(ix.byHash[i]).Cmp(ring.ID(from)) > 0 })
	var done int64
	v := blockstore.NewVerifier()
	for n := 0; n < len(ix.byHash) && done < h.cfg.ScrubBytes; n++ {
		hash := ix.byHash[(start+n)%len(ix.byHash)]
		size, err := h.blocks.Verify(hash, v)
		switch {
		case errors.Is(err, blockstore.ErrNotFound):
		case errors.Is(err, blockstore.ErrCorrupt):
			h.count(func(s *nodestatus.Heal) { s.BlocksCorrupt++ })
			h.log.Warn("damaged block found", "block", hash.String(), "err", err)
			cctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
			if err := h.blocks.Repair(cctx, hash); err != nil {
				h.fail(fmt.Errorf("heal: %w", err))
			}
			cancel()
		case err != nil:
			return err
		default:
			done += size
		}
		h.count(func(s *nodestatus.Heal) { s.BlocksScrubbed++ })
		h.mu.Lock()
		h.scrubAt = hash
		h.mu.Unlock()
	}
	return nil
}
