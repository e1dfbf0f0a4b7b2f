package heal

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/txlog"
)

// MaxItems bounds the items one listing returns, and the blocks one
// presence check asks about.
const MaxItems = 1000

// indexTTL is how long a listing of the local items serves the other
// hosts' comparisons before it is made again.
const indexTTL = 2 * time.Second

// entry is an item with its ring position, and for a partition the
// replica set in force in this host's log.
type entry struct {
	Item
	pos    ring.ID
	config []string
}

// index is the items of one kind this host held when it was listed,
// ascending by ring position.
type index struct {
	at     time.Time
	items  []entry
	byHash []blockstore.Hash // blocks only, ascending
}

// list returns the items of kind held here, listing them again if fresh is
// set or the last listing is older than indexTTL.
func (h *Healer) list(kind Kind, fresh bool) (*index, error) {
	h.mu.Lock()
	ix := h.index[kind]
	h.mu.Unlock()
	if !fresh && ix != nil && h.clock().Sub(ix.at) < indexTTL {
		return ix, nil
	}
	ix = &index{at: h.clock()}
	var err error
	switch kind {
	case KindPartition:
		err = h.logs.Partitions(func(p txlog.Held) error {
			ix.items = append(ix.items, entry{Item{Key: p.Name, Digest: p.LastHash}, ring.HashKey([]byte(p.Name)), p.Config})
			return nil
		})
	case KindBlock:
		err = h.blocks.Walk(func(hash blockstore.Hash) error {
			ix.items = append(ix.items, entry{Item{Key: string(hash[:]), Digest: hash}, ring.ID(hash), nil})
			ix.byHash = append(ix.byHash, hash)
			return nil
		})
	default:
		return nil, fmt.Errorf("heal: unknown kind %d", kind)
	}
	if err != nil {
		return nil, fmt.Errorf("heal: list the %s held: %w", kind, err)
	}
	slices.SortFunc(ix.items, func(a, b entry) int { return a.pos.Cmp(b.pos) })
	slices.SortFunc(ix.byHash, func(a, b blockstore.Hash) int { return ring.ID(a).Cmp(ring.ID(b)) })
	h.mu.Lock()
	h.index[kind] = ix
	h.mu.Unlock()
	return ix, nil
}

// HandleDigests returns this host's digest of each arc.
func (h *Healer) HandleDigests(kind Kind, arcs []Arc) ([]Digest, error) {
	if !kind.Valid() {
		return nil, fmt.Errorf("%w: unknown kind %d", ErrBadRequest, kind)
	}
	ix, err := h.list(kind, false)
	if err != nil {
		return nil, err
	}
	out := make([]Digest, len(arcs))
	for _, e := range ix.items {
		for j, a := range arcs {
			if a.Contains(e.pos) {
				out[j].add(e.Item)
			}
		}
	}
	return out, nil
}

// HandleItems lists this host's items on an arc in key order, after the
// key after, at most limit (MaxItems if 0 or more), and whether more
// follow.
func (h *Healer) HandleItems(kind Kind, arc Arc, after string, limit int) ([]Item, bool, error) {
	if !kind.Valid() {
		return nil, false, fmt.Errorf("%w: unknown kind %d", ErrBadRequest, kind)
	}
	if limit <= 0 || limit > MaxItems {
		limit = MaxItems
	}
	ix, err := h.list(kind, false)
	if err != nil {
		return nil, false, err
	}
	var out []Item
	for _, e := range ix.items {
		if arc.Contains(e.pos) && e.Key > after {
			out = append(out, e.Item)
		}
	}
	slices.SortFunc(out, func(a, b Item) int { return strings.Compare(a.Key, b.Key) })
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}
