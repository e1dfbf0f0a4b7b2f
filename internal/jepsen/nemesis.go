package jepsen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
	hotKey func() string // the key whose replicas some faults aim at
	kinds  []string      // of fault to choose from
	cover  []string      // kinds to do first, in this order
	size   int           // the cluster's size at the start
	faults []string      // what was done, in order
	log    *slog.Logger
	// lastLoss is when a node was last lost for good.
	lastLoss time.Time
}

// faultKinds are the kinds of fault, chosen uniformly.
var faultKinds = []string{"kill", "power-loss", "power-cut", "pause", "pause-leader", "partition-majority",
	"partition-bridge", "isolate-leader", "join", "leave", "replace", "clock"}

// lossGap is the least time between two nodes' loss for good; a second
// loss also waits until every running member's last healing pass found no
// copy missing (copiesComplete), so that healing has copied what the first
// held before the second goes: two of a key's three replicas lost at once
// lose it, whatever the system does (a 30-minute run lost two nodes 71 s
// apart, before the partitions they shared had moved). A node that leaves
// hands off what it holds first, and needs no gap.
const lossGap = time.Minute

// run injects one fault after another until ctx ends: each holds for
// hold, then is undone, and the cluster gets quiet before the next.
func (n *nemesis) run(ctx context.Context, hold, quiet time.Duration) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(jitter(n.rng, quiet)):
		}
		start := time.Now()
		f, err := n.inject(ctx, n.next())
		if err != nil {
			return err
		}
		n.faults = append(n.faults, f.name)
		n.log.Info("jepsen: fault", "fault", f.name, "took", time.Since(start).Round(time.Millisecond))
		select {
		case <-ctx.Done():
		case <-time.After(jitter(n.rng, hold)):
		}
		start = time.Now()
		if err := f.undo(); err != nil {
			return fmt.Errorf("undo %s: %w", f.name, err)
		}
		n.log.Info("jepsen: undone", "fault", f.name, "took", time.Since(start).Round(time.Millisecond))
	}
}

// next chooses the next kind of fault: the ones to cover first, then at
// random; a change of membership the cluster cannot take now (too few
// members left, too many joined, a loss too soon after the last) becomes a
// kill.
func (n *nemesis) next() string {
	kind := n.kinds[n.rng.IntN(len(n.kinds))]
	if len(n.cover) > 0 {
		kind, n.cover = n.cover[0], n.cover[1:]
	}
	members := len(n.c.members())
	switch {
	case kind == "join" && members > n.size,
		kind == "leave" && members <= max(3, n.size-1),
		kind == "replace" && (time.Since(n.lastLoss) < lossGap || !n.waitCopies()):
		return "kill"
	}
	return kind
}

// waitCopies waits up to a minute for copiesComplete, and reports whether
// it came.
func (n *nemesis) waitCopies() bool {
	for deadline := time.Now().Add(time.Minute); !n.c.copiesComplete(); time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			n.log.Info("jepsen: no node lost for good now: healing has copies to make")
			return false
		}
	}
	return true
}

// jitter returns a duration between d/2 and 3d/2.
func jitter(rng *rand.Rand, d time.Duration) time.Duration {
	return d/2 + time.Duration(rng.Int64N(int64(d)+1))
}

// maxPowerOnDelay bounds how long after the power comes back a node of a
// power cut starts: machines boot at their own pace, and the first may
// find no peer and start a ring alone.
const maxPowerOnDelay = 20 * time.Second

// noUndo is the undo of a fault that needs none.
func noUndo() error { return nil }

// inject does a fault of the given kind.
func (n *nemesis) inject(ctx context.Context, kind string) (fault, error) {
	members := n.c.members()
	victim := members[n.rng.IntN(len(members))]
	// restart starts the nodes (those not running) and waits until each
	// serves; with none, every member.
	restart := func(nodes ...int) func() error {
		return func() error {
			if len(nodes) == 0 {
				nodes = members
			}
			for _, i := range nodes {
				if nd := n.c.node(i); !nd.running() {
					if err := nd.start(); err != nil {
						return err
					}
				}
			}
			for _, i := range nodes {
				if err := n.c.waitServing(context.Background(), i); err != nil {
					return err
				}
			}
			return nil
		}
	}
	switch kind {
	case "kill":
		n.c.node(victim).kill()
		return fault{fmt.Sprintf("kill %d", victim), restart(victim)}, nil
	case "power-loss":
		if err := n.c.node(victim).powerLoss(); err != nil {
			return fault{}, fmt.Errorf("power loss of node %d: %w", victim, err)
		}
		return fault{fmt.Sprintf("power-loss %d", victim), restart(victim)}, nil
	case "power-cut": // every node at once; the power comes back to one after another
		for _, i := range members {
			if err := n.c.node(i).powerLoss(); err != nil {
				return fault{}, fmt.Errorf("power cut, node %d: %w", i, err)
			}
		}
		order := shuffled(n.rng, members)
		delays := make([]time.Duration, len(order))
		for k := range delays {
			delays[k] = time.Duration(n.rng.Int64N(int64(maxPowerOnDelay)))
		}
		slices.Sort(delays)
		return fault{"power-cut", func() error {
			start := time.Now()
			for k, i := range order {
				time.Sleep(time.Until(start.Add(delays[k])))
				if err := n.c.node(i).start(); err != nil {
					return err
				}
			}
			return restart()()
		}}, nil
	case "pause", "pause-leader":
		if kind == "pause-leader" {
			if r, err := n.replicasOf(ctx, n.hotKey()); err == nil {
				victim = r[0]
			}
		}
		nd := n.c.node(victim)
		nd.signal(syscall.SIGSTOP)
		return fault{fmt.Sprintf("pause %d", victim), func() error { nd.signal(syscall.SIGCONT); return nil }}, nil
	case "partition-majority":
		perm := shuffled(n.rng, members)
		minority := perm[:(len(perm)-1)/2]
		groups := [][]int{minority, perm[len(minority):]}
		return n.partition(fmt.Sprintf("partition %v|%v", groups[0], groups[1]), groups)
	case "partition-bridge":
		// Two halves that each see one node, which sees both: the hot
		// key's third replica, with its leader and second replica on
		// opposite sides, so that two leaders each find a majority
		// through the bridge. Random halves if the replicas are unknown.
		perm := shuffled(n.rng, members)
		if r, err := n.replicasOf(ctx, n.hotKey()); err == nil && len(r) == 3 {
			rest := slices.DeleteFunc(perm, func(i int) bool { return slices.Contains(r, i) })
			perm = append([]int{r[2], r[0], r[1]}, rest...)
		}
		bridge, sides := perm[0], [][]int{{perm[1]}, {perm[2]}}
		for k, i := range perm[3:] {
			sides[k%2] = append(sides[k%2], i)
		}
		return n.partition(fmt.Sprintf("bridge %d between %v|%v", bridge, sides[0], sides[1]), sides)
	case "isolate-leader": // cut the leader of the hot key off from every other node
		leader := victim
		if r, err := n.replicasOf(ctx, n.hotKey()); err == nil {
			leader = r[0]
		}
		others := slices.DeleteFunc(slices.Clone(members), func(i int) bool { return i == leader })
		return n.partition(fmt.Sprintf("isolate leader %d of %s", leader, n.hotKey()), [][]int{{leader}, others})
	case "join":
		i, err := n.c.addNode(ctx)
		if err != nil {
			return fault{}, fmt.Errorf("join: %w", err)
		}
		return fault{fmt.Sprintf("join %d", i), noUndo}, nil
	case "leave":
		err := n.c.leave(victim)
		if errors.Is(err, errLeaveRefused) {
			n.log.Info("jepsen: a leave refused", "err", err)
			return fault{fmt.Sprintf("leave-refused %d", victim), noUndo}, nil
		}
		if err != nil {
			return fault{}, err
		}
		return fault{fmt.Sprintf("leave %d", victim), noUndo}, nil
	case "replace": // lost for good with its disk, and a new node joins
		n.lastLoss = time.Now()
		nd := n.c.node(victim)
		nd.retire()
		if err := nd.powerLoss(); err != nil {
			return fault{}, fmt.Errorf("node %d lost for good: %w", victim, err)
		}
		i, err := n.c.addNode(ctx)
		if err != nil {
			return fault{}, fmt.Errorf("replace node %d: %w", victim, err)
		}
		return fault{fmt.Sprintf("replace %d by %d", victim, i), noUndo}, nil
	case "clock":
		// A jump back by up to 5 minutes or ahead by up to 20 seconds,
		// within maxClockOffset of the real time: a forward jump beyond
		// the garbage collector's grace time, less the time a write takes
		// to commit, lets it free a block a write in progress still needs
		// (docs/operations.md says so), so jumps ahead stay small.
		nd := n.c.node(victim)
		jump := -time.Duration(n.rng.Int64N(int64(5 * time.Minute)))
		if n.rng.IntN(2) == 0 {
			jump = time.Duration(n.rng.Int64N(int64(20 * time.Second)))
		}
		to := max(-maxClockOffset, min(maxClockOffset, nd.clock()+jump))
		if err := nd.setClock(to); err != nil {
			return fault{}, err
		}
		return fault{fmt.Sprintf("clock %d to %s", victim, to.Round(time.Second)), noUndo}, nil
	}
	return fault{}, fmt.Errorf("unknown kind of fault %q", kind)
}

// shuffled returns the members in random order.
func shuffled(rng *rand.Rand, members []int) []int {
	out := slices.Clone(members)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func (n *nemesis) partition(name string, groups [][]int) (fault, error) {
	if err := n.c.net.partition(groups); err != nil {
		return fault{}, err
	}
	return fault{name, n.c.net.heal}, nil
}

// replicasOf asks the members which nodes hold key's partition, leader
// first.
func (n *nemesis) replicasOf(ctx context.Context, key string) ([]int, error) {
	for _, i := range n.c.members() {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, fmt.Sprintf("http://%s/v1/lookup?key=kv/%s&n=3", n.c.httpAddr(i), key), nil)
		resp, err := n.c.web.Do(req)
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
		var out []int
		for _, r := range res.Replicas {
			for j := range n.c.net.size() {
				if r.Addr == n.c.grpcAddr(j) {
					out = append(out, j)
				}
			}
		}
		if len(out) == len(res.Replicas) {
			return out, nil
		}
	}
	return nil, fmt.Errorf("no node names the replicas of %s", key)
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
