package node

import (
	"context"
	"sync"
	"time"

	"github.com/difuse/difuse/ring"
)

// placementTTL is how long a looked-up placement is used again. The ring
// itself takes longer than this to show another host's change.
const placementTTL = time.Second

// maxPlacements bounds the cache; past it, it starts over.
const maxPlacements = 1 << 16

// placements answers the transaction logs' and the block store's lookups,
// one per request, from the ring, and keeps each answer for placementTTL
// unless this host's view of the ring changes first (then it forgets them
// all). A lookup often takes a call to another host; most requests then
// take none.
type placements struct {
	ring  *ring.Host
	mu    sync.Mutex
	cache map[placementKey]placement
}

type placementKey struct {
	key ring.ID
	n   int
}

type placement struct {
	res ring.Result
	at  time.Time
}

// Lookup returns the placement of key on n replicas.
func (p *placements) Lookup(ctx context.Context, key ring.ID, n int) (ring.Result, error) {
	k := placementKey{key, n}
	p.mu.Lock()
	c, ok := p.cache[k]
	p.mu.Unlock()
	if ok && time.Since(c.at) < placementTTL {
		return c.res, nil
	}
	res, err := p.ring.Lookup(ctx, key, n)
	if err != nil {
		return res, err
	}
	p.mu.Lock()
	if len(p.cache) >= maxPlacements {
		clear(p.cache)
	}
	p.cache[k] = placement{res, time.Now()}
	p.mu.Unlock()
	return res, nil
}

// forget drops every placement; the ring calls it on a change.
func (p *placements) forget() {
	p.mu.Lock()
	clear(p.cache)
	p.mu.Unlock()
}
