package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/store"
)

// peersKey is where a node remembers the other hosts of its ring, so that a
// restart without -j rejoins the same cluster.
var peersKey = []byte("ring/peers")

// learnedKey is where a node that has not joined yet keeps the members it
// learned of through -j, so that a later attempt joins through any of them
// if the -j node is down.
var learnedKey = []byte("ring/learned")

// joinOrCreate makes the node a ring member. A node that remembers peers
// from an earlier run rejoins through any of them (and the -j node, tried
// first); if the peers that answer are all waiting for a ring themselves,
// the one with the lowest address starts it; if none answers within
// JoinTimeout it starts a ring alone, which the others join as they come
// back. A node with no peers to remember joins through -j or any member it
// learned of from it (now or on an earlier attempt), trying until
// JoinTimeout, or, without -j, starts a new ring.
func (n *Node) joinOrCreate(ctx context.Context) error {
	remembered, err := n.loadHosts(peersKey)
	if err != nil {
		return err
	}
	n.ring.Remember(remembered...)
	n.healer.Expect(remembered...)
	targets := remembered
	restarting := len(remembered) > 0 // a member before: its peers are in the store
	if n.cfg.Join != "" {
		targets = withOthers([]string{n.cfg.Join}, remembered)
	}
	if len(targets) == 0 {
		return n.ring.Create()
	}
	if n.cfg.Join != "" && !restarting {
		learned, err := n.loadHosts(learnedKey)
		if err != nil {
			return err
		}
		targets = n.copyBeforeJoin(ctx, withOthers(targets, learned))
	}
	deadline := time.Now().Add(n.cfg.JoinTimeout)
	var lastErr error
	for attempt := 0; ; attempt++ {
		var waiting []string // alive, but not members yet: restarting too
		for _, t := range targets {
			err := n.ring.Join(ctx, t)
			if err == nil {
				n.joinedVia.Store(&t)
				return nil
			}
			if errors.Is(err, ring.ErrNotMember) {
				waiting = append(waiting, t)
			}
			lastErr = err
			n.log.Debug("join attempt failed", "via", t, "err", err)
		}
		// When the whole cluster restarts, every node finds its peers alive
		// but outside any ring. The one with the lowest address starts the
		// ring at once and the others join it: us, if our address is below
		// every waiting peer's and we start a cluster or restart in one
		// (-j names the way in the first time only: after a power cut the
		// node it names may be gone for good, or come back last).
		if (n.cfg.Join == "" || restarting) && len(waiting) > 0 && n.ring.Addr() < slices.Min(waiting) {
			n.log.Info("every reachable peer is waiting for a ring; starting it", "waiting", strings.Join(waiting, ","))
			return n.ring.Create()
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Second, time.Duration(attempt+1)*200*time.Millisecond)):
		}
	}
	if n.cfg.Join != "" && !restarting {
		return fmt.Errorf("%w %s: %w", ErrJoin, n.cfg.Join, lastErr)
	}
	n.log.Warn("no remembered peer answered; starting a ring alone, the others join it as they come back",
		"peers", strings.Join(remembered, ","), "err", lastErr)
	return n.ring.Create()
}

// copyBeforeJoin learns the ring's members through any of seeds, keeps
// them (learnedKey) and copies what the ring will place on this node from
// the nodes that hold it now, before the node's vnodes enter the ring (see
// heal.Healer.Join). It returns the hosts to join through: seeds, then the
// members learned. A cluster that cannot be reached or walked is left to
// the join's own error.
func (n *Node) copyBeforeJoin(ctx context.Context, seeds []string) []string {
	wctx, cancel := context.WithTimeout(ctx, n.cfg.JoinTimeout)
	refs, err := ring.Members(wctx, n.ringTr, seeds)
	cancel()
	if err != nil {
		n.log.Debug("cannot learn the ring before joining", "via", strings.Join(seeds, ","), "err", err)
		return seeds
	}
	var hosts []string
	for _, r := range refs {
		if r.Addr != n.ring.Addr() && !slices.Contains(hosts, r.Addr) {
			hosts = append(hosts, r.Addr)
		}
	}
	if err := n.saveHosts(learnedKey, hosts); err != nil {
		n.log.Warn("cannot keep the members learned before joining", "err", err)
	}
	start := time.Now()
	copied, missed := n.healer.Join(ctx, refs, n.ring.OwnRefs())
	n.log.Info("copied this node's share before joining", "items", copied, "missed", missed, "took", time.Since(start).Round(time.Millisecond))
	return withOthers(seeds, hosts)
}

// loadHosts returns the hosts stored at key.
func (n *Node) loadHosts(key []byte) ([]string, error) {
	b, err := n.db.Get(key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the hosts at %s: %w", key, err)
	}
	return strings.Fields(string(b)), nil
}

// saveHosts stores hosts at key, durably.
func (n *Node) saveHosts(key []byte, hosts []string) error {
	err := n.db.Update(func(w store.Writer) error { return w.Set(key, []byte(strings.Join(hosts, "\n"))) })
	if err == nil {
		err = n.db.Sync()
	}
	return err
}

// withOthers returns hosts followed by those of more it lacks.
func withOthers(hosts, more []string) []string {
	return append(slices.Clone(hosts), slices.DeleteFunc(slices.Clone(more), func(h string) bool { return slices.Contains(hosts, h) })...)
}

// peerSet is the one record of the other hosts the ring last showed
// here.
type peerSet struct {
	mu   sync.Mutex
	last []string
	// changed holds a token while a change waits to be saved.
	changed chan struct{}
}

// update records hosts and reports whether they differ from the last.
func (p *peerSet) update(hosts []string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if slices.Equal(p.last, hosts) {
		return false
	}
	p.last = hosts
	p.touch()
	return true
}

// touch asks for the hosts to be saved.
func (p *peerSet) touch() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// rememberPeers saves the ring's other hosts whenever they change (a
// failed save is tried again a second later), until ctx is done.
func (n *Node) rememberPeers(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.peers.changed:
		}
		if !n.savePeers() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
				n.peers.touch()
			}
		}
	}
}

// savePeers stores the ring's other hosts and reports whether it did. An
// empty set is not stored: a node that has lost sight of every peer keeps
// the ones it knew.
func (n *Node) savePeers() bool {
	peers := n.ring.KnownHosts()
	if len(peers) == 0 {
		return true
	}
	if err := n.saveHosts(peersKey, peers); err != nil {
		n.log.Warn("cannot remember peers", "err", err)
		return false
	}
	return true
}
