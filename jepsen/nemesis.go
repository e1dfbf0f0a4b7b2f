package jepsen

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"time"
)

// fault is one thing the nemesis does, and how to undo it.
type fault struct {
	name string
	undo func() error
}

// nemesis injects faults into a cluster on a random schedule.
type nemesis struct {
	c      *cluster
	rng    *rand.Rand
	hotKey func() string // the key whose leader some faults aim at
	kinds  []string      // of fault to choose from
	faults []string      // what was done, in order
}

// kinds of fault, chosen uniformly.
var faultKinds = []string{"kill", "pause", "pause-leader", "partition-majority", "partition-bridge", "isolate-leader"}

// run injects one fault after another until ctx ends: each holds for
// hold, then is undone, and the cluster gets quiet before the next.
func (n *nemesis) run(ctx context.Context, hold, quiet time.Duration) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(jitter(n.rng, quiet)):
		}
		f, err := n.inject(ctx)
		if err != nil {
			return err
		}
		n.faults = append(n.faults, f.name)
		select {
		case <-ctx.Done():
		case <-time.After(jitter(n.rng, hold)):
		}
		if err := f.undo(); err != nil {
			return fmt.Errorf("undo %s: %w", f.name, err)
		}
	}
}

// jitter returns a duration between d/2 and 3d/2.
func jitter(rng *rand.Rand, d time.Duration) time.Duration {
	return d/2 + time.Duration(rng.Int64N(int64(d)+1))
}

// inject does a random fault.
func (n *nemesis) inject(ctx context.Context) (fault, error) {
	nodes := len(n.c.nodes)
	victim := n.rng.IntN(nodes)
	kind := n.kinds[n.rng.IntN(len(n.kinds))]
	switch kind {
	case "kill":
		nd := n.c.nodes[victim]
		nd.kill()
		return fault{fmt.Sprintf("kill %d", victim), func() error {
			if err := nd.start(); err != nil {
				return err
			}
			return n.c.waitServing(context.Background(), victim)
		}}, nil
	case "pause", "pause-leader":
		if kind == "pause-leader" {
			if leader, err := n.leaderOf(ctx, n.hotKey()); err == nil {
				victim = leader
			}
		}
		nd := n.c.nodes[victim]
		nd.signal(syscall.SIGSTOP)
		return fault{fmt.Sprintf("pause %d", victim), func() error { nd.signal(syscall.SIGCONT); return nil }}, nil
	case "partition-majority":
		perm := n.rng.Perm(nodes)
		minority := perm[:(nodes-1)/2]
		groups := [][]int{minority, perm[len(minority):]}
		return n.partition(fmt.Sprintf("partition %v|%v", groups[0], groups[1]), groups)
	case "partition-bridge":
		// Two halves that each see one node, which sees both.
		perm := n.rng.Perm(nodes)
		bridge, rest := perm[0], perm[1:]
		half := len(rest) / 2
		groups := [][]int{rest[:half], rest[half:]}
		return n.partition(fmt.Sprintf("bridge %d between %v|%v", bridge, groups[0], groups[1]), groups)
	case "isolate-leader": // cut the leader of the hot key off from every other node
		leader, err := n.leaderOf(ctx, n.hotKey())
		if err != nil {
			leader = victim
		}
		var others []int
		for i := range nodes {
			if i != leader {
				others = append(others, i)
			}
		}
		return n.partition(fmt.Sprintf("isolate leader %d of %s", leader, n.hotKey()), [][]int{{leader}, others})
	}
	return fault{}, fmt.Errorf("unknown kind of fault %q", kind)
}

func (n *nemesis) partition(name string, groups [][]int) (fault, error) {
	if err := n.c.net.partition(groups); err != nil {
		return fault{}, err
	}
	return fault{name, n.c.net.heal}, nil
}

// leaderOf asks a node which node leads key's partition.
func (n *nemesis) leaderOf(ctx context.Context, key string) (int, error) {
	for i := range n.c.nodes {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, fmt.Sprintf("http://%s/v1/lookup?key=kv/%s&n=1", n.c.httpAddr(i), key), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			continue
		}
		var res struct{ Replicas []struct{ Addr string } }
		err = json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		cancel()
		if err != nil || len(res.Replicas) == 0 {
			continue
		}
		for j := range n.c.nodes {
			if res.Replicas[0].Addr == n.c.grpcAddr(j) {
				return j, nil
			}
		}
	}
	return 0, fmt.Errorf("no node names the leader of %s", key)
}

// summary counts the faults by kind.
func (n *nemesis) summary() string {
	counts := map[string]int{}
	for _, f := range n.faults {
		counts[strings.Fields(f)[0]]++
	}
	var parts []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range counts {
			if !yield(k) {
				return
			}
		}
	}) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, counts[k]))
	}
	return strings.Join(parts, ",")
}
