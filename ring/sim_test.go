package ring

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// sim is a deterministic in-memory cluster: every host is ticked in address
// order from the test's goroutine, and randomness comes from a fixed seed.
type sim struct {
	t     testing.TB
	net   *Network
	rng   *rand.Rand
	hosts map[string]*Host
	addrs []string // every host ever added, in order
	alive map[string]bool
	cfg   Config
	ctx   context.Context
}

func newSim(t testing.TB, seed uint64) *sim {
	return &sim{
		t:     t,
		net:   NewNetwork(seed),
		rng:   rand.New(rand.NewPCG(seed, 7)),
		hosts: map[string]*Host{},
		alive: map[string]bool{},
		ctx:   context.Background(),
	}
}

// sized returns full, or short under -short: the race detector slows the
// simulations tenfold, so the race pass runs them smaller and a separate
// pass without it runs them at full size.
func sized(full, short int) int {
	if testing.Short() {
		return short
	}
	return full
}

func hostAddr(i int) string { return fmt.Sprintf("h%03d", i) }

// add creates a fresh host at addr (replacing a dead one there).
func (s *sim) add(addr string) *Host {
	s.t.Helper()
	cfg := s.cfg
	cfg.Addr = addr
	h, err := New(cfg, s.net.Transport(addr))
	if err != nil {
		s.t.Fatal(err)
	}
	if _, ok := s.hosts[addr]; !ok {
		s.addrs = append(s.addrs, addr)
	}
	s.hosts[addr] = h
	s.net.Attach(addr, h)
	s.alive[addr] = true
	return h
}

func (s *sim) create(addr string) {
	s.t.Helper()
	if err := s.add(addr).Create(); err != nil {
		s.t.Fatal(err)
	}
}

func (s *sim) join(addr, via string) {
	s.t.Helper()
	if err := s.add(addr).Join(s.ctx, via); err != nil {
		s.t.Fatalf("join %s via %s: %v", addr, via, err)
	}
}

// grow creates a ring on host 0 and joins hosts 1..n-1 to it through host
// 0, all before any maintenance round.
func (s *sim) grow(n int) {
	s.t.Helper()
	s.create(hostAddr(0))
	for i := 1; i < n; i++ {
		s.join(hostAddr(i), hostAddr(0))
	}
}

func (s *sim) kill(addr string) {
	s.net.Kill(addr)
	s.alive[addr] = false
}

func (s *sim) liveAddrs() []string {
	var out []string
	for _, a := range s.addrs {
		if s.alive[a] {
			out = append(out, a)
		}
	}
	return out
}

func (s *sim) randomLive() string {
	live := s.liveAddrs()
	return live[s.rng.IntN(len(live))]
}

// tick runs n rounds of maintenance on every live host.
func (s *sim) tick(n int) {
	for range n {
		for _, a := range s.liveAddrs() {
			s.hosts[a].Tick(s.ctx)
		}
	}
}

// members returns the live member vnodes, ascending.
func (s *sim) members() []Ref {
	var refs []Ref
	for _, a := range s.liveAddrs() {
		for _, id := range s.hosts[a].ids() {
			refs = append(refs, Ref{ID: id, Addr: a})
		}
	}
	slices.SortFunc(refs, func(a, b Ref) int { return a.ID.Cmp(b.ID) })
	return refs
}

func (s *sim) state(r Ref) (vnode, bool) { return s.hosts[r.Addr].snapshot(r.ID) }

func (s *sim) isLive(r Ref) bool {
	if !s.alive[r.Addr] {
		return false
	}
	_, ok := s.state(r)
	return ok
}

// converged reports why the ring is not yet the ideal one: every successor
// list exactly the true successors (trimmed by the host's rules), every
// predecessor the true one.
func (s *sim) converged() error {
	m := s.members()
	for i, r := range m {
		v, _ := s.state(r)
		want := s.hosts[r.Addr].trim(r, append(slices.Clone(m[i+1:]), m[:i]...))
		if !slices.Equal(v.succs, want) {
			return fmt.Errorf("vnode %s: successors %v, want %v", r, v.succs, want)
		}
		if wantPred := m[(i+len(m)-1)%len(m)]; v.pred != wantPred {
			return fmt.Errorf("vnode %s: predecessor %s, want %s", r, v.pred, wantPred)
		}
	}
	return nil
}

// tickUntilConverged ticks until the ring converges and returns the rounds
// it took.
func (s *sim) tickUntilConverged(limit int) int {
	s.t.Helper()
	for i := 0; ; i++ {
		err := s.converged()
		if err == nil {
			return i
		}
		if i == limit {
			s.t.Fatalf("not converged after %d rounds: %v", limit, err)
		}
		s.tick(1)
	}
}

// checkInvariants checks Zave's invariants on the live members: every
// successor list is ordered (OrderedSuccessorLists) and has a live entry;
// following best (first live) successors gives exactly one cycle
// (AtLeastOneRing, AtMostOneRing), ordered around the circle (OrderedRing),
// which every vnode off it reaches (ConnectedAppendages).
func (s *sim) checkInvariants() error {
	m := s.members()
	best := map[ID]Ref{}
	for _, r := range m {
		v, _ := s.state(r)
		prev := r.ID
		for _, x := range v.succs {
			if !between(prev, x.ID, r.ID) {
				return fmt.Errorf("OrderedSuccessorLists: %s has %v", r, v.succs)
			}
			prev = x.ID
		}
		i := slices.IndexFunc(v.succs, s.isLive)
		if i < 0 {
			return fmt.Errorf("SufficientSuccessors: %s has no live successor in %v", r, v.succs)
		}
		best[r.ID] = v.succs[i]
	}
	if len(m) == 0 {
		return nil
	}
	// Walk from the first member until a vnode repeats: that is a cycle.
	seen := map[ID]int{}
	cur := m[0]
	for step := 0; ; step++ {
		if _, ok := seen[cur.ID]; ok {
			break
		}
		seen[cur.ID] = step
		cur = best[cur.ID]
	}
	cycle := map[ID]bool{}
	var ring []Ref
	for r := cur; !cycle[r.ID]; r = best[r.ID] {
		cycle[r.ID] = true
		ring = append(ring, r)
	}
	wraps := 0
	for i, r := range ring {
		if next := ring[(i+1)%len(ring)]; next.ID.Cmp(r.ID) <= 0 {
			wraps++
		}
	}
	if wraps != 1 {
		return fmt.Errorf("OrderedRing: the cycle of %d vnodes wraps %d times", len(ring), wraps)
	}
	for _, r := range m {
		x := r
		for steps := 0; !cycle[x.ID]; steps++ {
			if steps > len(m) {
				return fmt.Errorf("ConnectedAppendages: %s never reaches the ring", r)
			}
			x = best[x.ID]
		}
	}
	return nil
}

// trueReplicas computes a key's replica set from the live members m.
func trueReplicas(m []Ref, key ID, n int) []Ref {
	i, _ := slices.BinarySearchFunc(m, key, func(r Ref, k ID) int { return r.ID.Cmp(k) })
	var out []Ref
	hosts := map[string]bool{}
	for j := range m {
		r := m[(i+j)%len(m)]
		if !hosts[r.Addr] {
			hosts[r.Addr] = true
			out = append(out, r)
			if len(out) == n {
				break
			}
		}
	}
	return out
}

// checkLookups looks up keys from every live host and compares each answer
// with the replica set the true membership gives.
func (s *sim) checkLookups(keys int) (hops []int) {
	s.t.Helper()
	m := s.members()
	for k := range keys {
		key := HashKey(fmt.Appendf(nil, "key-%d", k))
		want := trueReplicas(m, key, 3)
		for _, a := range s.liveAddrs() {
			res, err := s.hosts[a].Lookup(s.ctx, key, 3)
			if err != nil {
				s.t.Fatalf("lookup %d from %s: %v", k, a, err)
			}
			if !slices.Equal(res.Replicas, want) {
				s.t.Fatalf("lookup %d from %s = %v, want %v", k, a, res.Replicas, want)
			}
			hops = append(hops, res.Hops)
		}
	}
	return hops
}
