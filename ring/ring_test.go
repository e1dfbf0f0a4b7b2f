package ring

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
)

func TestBetween(t *testing.T) {
	id := func(b byte) ID { var x ID; x[0] = b; return x }
	cases := []struct {
		a, x, b byte
		open    bool // x in (a, b)
		right   bool // x in (a, b]
	}{
		{10, 20, 30, true, true},
		{10, 10, 30, false, false},
		{10, 30, 30, false, true},
		{10, 40, 30, false, false},
		{200, 250, 10, true, true}, // wraps
		{200, 5, 10, true, true},
		{200, 100, 10, false, false},
		{50, 60, 50, true, true}, // a == b: whole circle but a
		{50, 50, 50, false, true},
	}
	for _, c := range cases {
		if got := between(id(c.a), id(c.x), id(c.b)); got != c.open {
			t.Errorf("between(%d, %d, %d) = %v", c.a, c.x, c.b, got)
		}
		if got := betweenRight(id(c.a), id(c.x), id(c.b)); got != c.right {
			t.Errorf("betweenRight(%d, %d, %d) = %v", c.a, c.x, c.b, got)
		}
	}
}

func TestAddPow2AndDistance(t *testing.T) {
	var zero, max ID
	for i := range max {
		max[i] = 0xff
	}
	if got := zero.addPow2(0); got[31] != 1 {
		t.Fatalf("0 + 2^0 = %s", got)
	}
	if got := zero.addPow2(255); got[0] != 0x80 {
		t.Fatalf("0 + 2^255 = %s", got)
	}
	if got := max.addPow2(0); got != zero {
		t.Fatalf("max + 1 = %s, want 0 (wrap)", got)
	}
	a := HashKey([]byte("a"))
	for _, i := range []int{0, 7, 8, 100, 255} {
		if d := distance(a, a.addPow2(i)); d != zero.addPow2(i) {
			t.Fatalf("distance(a, a+2^%d) = %s", i, d)
		}
	}
	if d := distance(a, a); d != zero {
		t.Fatalf("distance(a, a) = %s", d)
	}
	for _, i := range []int{0, 1, 9, 200, 255} {
		if got := zero.addPow2(i).bitLen(); got != i+1 {
			t.Fatalf("bitLen(2^%d) = %d", i, got)
		}
	}
	if zero.bitLen() != 0 || max.bitLen() != 256 {
		t.Fatal("bitLen of 0 or of the maximum")
	}
}

func TestIDParse(t *testing.T) {
	a := HashKey([]byte("x"))
	b, err := ParseID(a.String())
	if err != nil || b != a {
		t.Fatalf("ParseID(String()) = %s, %v", b, err)
	}
	for _, bad := range []string{"", "zz", a.String()[:10]} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) succeeded", bad)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{
		{},
		{Addr: "a", VNodes: -1},
		{Addr: "a", Replicas: 3, MinSuccessors: 3},
		{Addr: "a", Replicas: 4},
		{Addr: "a", Replicas: -3},
		{Addr: "a", MinSuccessors: 10, MaxSuccessors: 5},
	} {
		if _, err := New(c, nil); err == nil {
			t.Errorf("New(%+v) succeeded", c)
		}
	}
	h, err := New(Config{Addr: "a", VNodes: 4}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Create(); err == nil {
		t.Error("created a ring of 4 vnodes with r = 4; it needs r+1")
	}
}

// 16 hosts of 8 vnodes join one at a time, each through a random member;
// after stabilisation every successor list and predecessor is the true one
// and lookups from every host agree with the true placement of 10,000 keys.
func TestJoinOneByOne(t *testing.T) {
	s := newSim(t, 1)
	s.create(hostAddr(0))
	for i := 1; i < 16; i++ {
		s.join(hostAddr(i), s.randomLive())
		s.tick(2)
		if err := s.checkInvariants(); err != nil {
			t.Fatalf("after join %d: %v", i, err)
		}
	}
	rounds := s.tickUntilConverged(200)
	t.Logf("converged %d rounds after the last join", rounds)
	s.checkLookups(sized(10000, 500))
}

// The same 16 hosts join all at once through one host.
func TestJoinAllAtOnce(t *testing.T) {
	s := newSim(t, 2)
	s.grow(16)
	for range 300 {
		if err := s.checkInvariants(); err != nil {
			t.Fatal(err)
		}
		if s.converged() == nil {
			break
		}
		s.tick(1)
	}
	rounds := s.tickUntilConverged(0)
	t.Logf("converged; %d more rounds", rounds)
	s.checkLookups(sized(10000, 500))
}

// Killing 3 hosts at once (fewer than the SuccessorHosts = 4 that every
// successor list covers) leaves every list a live entry; the ring repairs.
func TestKillThreeHosts(t *testing.T) {
	s := newSim(t, 3)
	s.grow(16)
	s.tickUntilConverged(300)
	for _, a := range []string{hostAddr(3), hostAddr(7), hostAddr(8)} {
		s.kill(a)
	}
	for i := 0; s.converged() != nil; i++ {
		if err := s.checkInvariants(); err != nil {
			t.Fatalf("round %d after the kills: %v", i, err)
		}
		if i == 100 {
			t.Fatalf("not repaired after 100 rounds: %v", s.converged())
		}
		s.tick(1)
	}
	s.checkLookups(sized(10000, 500))
}

// Joins, failures, returns and graceful leaves interleave for 1,000 rounds
// with 2% of calls dropped; Zave's invariants hold after every round, and
// the ring converges once churn stops.
func TestChurnKeepsInvariants(t *testing.T) {
	s := newSim(t, 4)
	s.grow(8)
	s.tickUntilConverged(200)
	s.net.SetDropRate(0.02)
	next := 8
	lastFailure := -100
	var joins, kills, leaves int
	for round := range sized(1000, 300) {
		switch x := s.rng.IntN(100); {
		case x < 4: // a new host, or a dead one restarting at its address
			addr := hostAddr(next)
			var dead []string
			for _, a := range s.addrs {
				if !s.alive[a] {
					dead = append(dead, a)
				}
			}
			if len(dead) > 0 && s.rng.IntN(2) == 0 {
				addr = dead[s.rng.IntN(len(dead))]
			} else {
				next++
			}
			if err := s.add(addr).Join(s.ctx, s.randomLive()); err != nil {
				s.kill(addr) // a join that fails (dropped calls) leaves no member behind
				s.hosts[addr].Leave(s.ctx)
			} else {
				joins++
			}
		case x < 7 && round-lastFailure > 20 && len(s.liveAddrs()) > 6:
			// Fail one host at a time, with time to repair in between.
			victim := s.randomLive()
			if s.rng.IntN(3) == 0 {
				s.hosts[victim].Leave(s.ctx)
				leaves++
			} else {
				kills++
			}
			s.kill(victim)
			lastFailure = round
		}
		s.tick(1)
		if err := s.checkInvariants(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	t.Logf("churn: %d joins, %d kills, %d graceful leaves; %d live hosts", joins, kills, leaves, len(s.liveAddrs()))
	s.net.SetDropRate(0)
	rounds := s.tickUntilConverged(300)
	t.Logf("converged %d rounds after churn stopped", rounds)
	s.checkLookups(sized(2000, 200))
}

// A graceful leave closes the gap at once: before any maintenance round,
// every vnode's first successor and predecessor are the true ones. Deeper
// successor-list entries are refreshed by the next stabilisation rounds.
func TestGracefulLeave(t *testing.T) {
	s := newSim(t, 5)
	s.grow(6)
	s.tickUntilConverged(200)
	s.hosts[hostAddr(2)].Leave(s.ctx)
	s.kill(hostAddr(2))
	m := s.members()
	for i, r := range m {
		v, _ := s.state(r)
		if want := m[(i+1)%len(m)]; v.succs[0] != want {
			t.Errorf("right after the leave, %s has successor %s, want %s", r, v.succs[0], want)
		}
		if want := m[(i+len(m)-1)%len(m)]; v.pred != want {
			t.Errorf("right after the leave, %s has predecessor %s, want %s", r, v.pred, want)
		}
	}
	s.tickUntilConverged(50)
	s.checkLookups(sized(1000, 200))
}

// A partition that cuts a host off makes the others drop it; once healed it
// is adopted again.
func TestPartitionAndHeal(t *testing.T) {
	s := newSim(t, 6)
	s.grow(6)
	s.tickUntilConverged(200)
	others := []string{hostAddr(0), hostAddr(1), hostAddr(2), hostAddr(3), hostAddr(4)}
	s.net.Partition([]string{hostAddr(5)}, others)
	s.tick(10)
	for _, a := range others {
		for _, st := range s.hosts[a].Status() {
			for _, r := range st.Succs {
				if r.Addr == hostAddr(5) && r == st.Succs[0] {
					t.Fatalf("%s still has the cut-off host first: %v", st.Self, st.Succs)
				}
			}
		}
	}
	s.net.Heal()
	// The cut-off host kept its own view; rectify and stabilise pull it back.
	s.tickUntilConverged(200)
	s.checkLookups(sized(1000, 200))
}

// OnChange reports every change of a vnode's neighbours.
func TestOnChange(t *testing.T) {
	s := newSim(t, 7)
	var changes []Change
	s.cfg.OnChange = func(c Change) { changes = append(changes, c) }
	s.create(hostAddr(0))
	if len(changes) != 8 {
		t.Fatalf("Create reported %d changes, want 8", len(changes))
	}
	changes = nil
	s.cfg.OnChange = nil
	s.join(hostAddr(1), hostAddr(0))
	s.tickUntilConverged(100)
	if len(changes) == 0 {
		t.Fatal("no change reported on host 0 when host 1 joined")
	}
	last := map[ID]Change{}
	for _, c := range changes {
		last[c.VNode.ID] = c
	}
	for _, st := range s.hosts[hostAddr(0)].Status() {
		if c, ok := last[st.Self.ID]; ok && (c.Pred != st.Pred || !slices.Equal(c.Succs, st.Succs)) {
			t.Fatalf("last change of %s = %+v, state %+v", st.Self, c, st)
		}
	}
}

// Hop counts of lookups in converged rings of 1,024 and 8,192 vnodes grow
// as O(log V): the mean stays under log2(V)/2 + 1 and the maximum under
// log2(V).
func TestHopCounts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds rings of 8,192 vnodes")
	}
	for _, hosts := range []int{128, 1024} {
		mean, maxHops := measureHops(t, hosts, 2000)
		v := float64(hosts * 8)
		t.Logf("V = %5.0f vnodes: mean %.2f hops, max %d (log2 V = %.0f)", v, mean, maxHops, math.Log2(v))
		if mean > math.Log2(v)/2+1 || float64(maxHops) > math.Log2(v) {
			t.Errorf("V = %.0f: mean %.2f, max %d hops: not O(log V)", v, mean, maxHops)
		}
	}
}

// measureHops builds a converged ring of hosts × 8 vnodes, lets fix-fingers
// fill the finger tables, and measures lookups from random vnodes.
func measureHops(t *testing.T, hosts, lookups int) (mean float64, maxHops int) {
	s := newSim(t, 8)
	for i := range hosts {
		s.add(hostAddr(i))
	}
	// Start from the converged successor lists and predecessors, as a long
	// run of stabilisation would leave them, to spare the test the rounds.
	m := func() []Ref {
		var refs []Ref
		for _, a := range s.addrs {
			refs = append(refs, s.hosts[a].OwnRefs()...)
		}
		slices.SortFunc(refs, func(a, b Ref) int { return a.ID.Cmp(b.ID) })
		return refs
	}()
	for i, r := range m {
		h := s.hosts[r.Addr]
		v := &vnode{self: r, pred: m[(i+len(m)-1)%len(m)]}
		v.succs = h.trim(r, append(slices.Clone(m[i+1:min(i+64, len(m))]), m[:max(0, i+64-len(m))]...))
		h.vnodes[r.ID] = v
		h.order = append(h.order, r.ID)
	}
	for _, a := range s.addrs {
		slices.SortFunc(s.hosts[a].order, func(x, y ID) int { return x.Cmp(y) })
	}
	if err := s.converged(); err != nil {
		t.Fatal(err)
	}
	// Fix fingers until a whole round changes none.
	for round := 0; ; round++ {
		changed := false
		for _, r := range m {
			h := s.hosts[r.Addr]
			old := h.vnodes[r.ID].fingers
			h.fixFinger(s.ctx, r.ID)
			changed = changed || h.vnodes[r.ID].fingers != old
		}
		if !changed && round > 2*int(math.Log2(float64(len(m)))) {
			break
		}
	}
	var total int
	for k := range lookups {
		from := m[s.rng.IntN(len(m))]
		key := HashKey(fmt.Appendf(nil, "hop-%d", k))
		succs, hops, err := s.hosts[from.Addr].findSuccessor(context.Background(), []Ref{from}, key)
		if err != nil {
			t.Fatal(err)
		}
		if want := trueReplicas(m, key, 1)[0]; succs[0] != want {
			t.Fatalf("lookup of %s found %s, want %s", key.Short(), succs[0], want)
		}
		total += hops
		maxHops = max(maxHops, hops)
	}
	return float64(total) / float64(lookups), maxHops
}

// A client caches the membership walked from one host and routes in one
// hop; after the ring changes, the leaders it names turn requests away
// (Leads), and a fresh collection routes correctly again.
func TestCacheOneHop(t *testing.T) {
	s := newSim(t, 9)
	s.grow(6)
	s.tickUntilConverged(200)
	tr := s.net.Transport("client")
	var c Cache
	walk := func() {
		refs, err := Members(s.ctx, tr, []string{hostAddr(3)})
		if err != nil {
			t.Fatal(err)
		}
		c.Update(refs)
	}
	walk()
	if c.Len() != 48 {
		t.Fatalf("walk found %d vnodes, want 48", c.Len())
	}
	leads := func(key ID) bool {
		res, _ := c.Lookup(key, 3)
		ok, err := s.hosts[res.Leader().Addr].Leads(res.Leader().ID, key)
		return err == nil && ok
	}
	m := s.members()
	for k := range 1000 {
		key := HashKey(fmt.Appendf(nil, "c%d", k))
		res, _ := c.Lookup(key, 3)
		if want := trueReplicas(m, key, 3); !slices.Equal(res.Replicas, want) {
			t.Fatalf("cached lookup %d = %v, want %v", k, res.Replicas, want)
		}
		if !leads(key) {
			t.Fatalf("leader %s of key %d says it does not lead it", res.Leader(), k)
		}
	}
	s.join(hostAddr(6), hostAddr(0))
	s.tickUntilConverged(200)
	misses := 0
	for k := range 1000 {
		if !leads(HashKey(fmt.Appendf(nil, "c%d", k))) {
			misses++
		}
	}
	if misses == 0 {
		t.Fatal("a stale cache routed every key right after a host joined")
	}
	walk()
	for k := range 1000 {
		if !leads(HashKey(fmt.Appendf(nil, "c%d", k))) {
			t.Fatalf("after a fresh walk, key %d is still misrouted", k)
		}
	}
	t.Logf("stale cache misrouted %d of 1,000 keys after a join; none after a walk", misses)
}

// A partition that splits the hosts 3|3 for long enough closes each side
// into a ring of its own; once it heals, the merge check joins them again.
func TestPartitionSplitsAndMerges(t *testing.T) {
	s := newSim(t, 10)
	s.grow(6)
	s.tickUntilConverged(200)
	left, right := []string{hostAddr(0), hostAddr(1), hostAddr(2)}, []string{hostAddr(3), hostAddr(4), hostAddr(5)}
	s.net.Partition(left, right)
	s.tick(60)
	// Each side is a ring of its own: no vnode's successors cross over.
	for _, a := range left {
		for _, st := range s.hosts[a].Status() {
			for _, r := range st.Succs {
				if slices.Contains(right, r.Addr) {
					t.Fatalf("%s still lists %s across the partition", st.Self, r)
				}
			}
		}
	}
	s.net.Heal()
	rounds := s.tickUntilConverged(300)
	t.Logf("merged into one ring %d rounds after the partition healed", rounds)
	s.checkLookups(sized(1000, 200))
}
