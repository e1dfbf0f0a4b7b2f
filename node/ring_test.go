package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/difuse/difuse/node"
	"github.com/difuse/difuse/ring"
)

type lookupReply struct {
	Key      string     `json:"key"`
	Hash     string     `json:"hash"`
	Replicas []ring.Ref `json:"replicas"`
}

func httpLookup(httpAddr, key string, n int) (lookupReply, int, error) {
	var r lookupReply
	resp, err := web.Get(fmt.Sprintf("http://%s/v1/lookup?key=%s&n=%d", httpAddr, url.QueryEscape(key), n))
	if err != nil {
		return r, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, resp.StatusCode, nil
	}
	return r, resp.StatusCode, json.NewDecoder(resp.Body).Decode(&r)
}

// agree reports whether every node gives the same replica set, on the
// given hosts only, for each of keys.
func agree(nodes []*node.Node, keys int, hosts []string) error {
	for k := range keys {
		key := fmt.Sprintf("k%d", k)
		var first []ring.Ref
		for i, n := range nodes {
			r, code, err := httpLookup(n.HTTPAddr(), key, 3)
			if err != nil || code != http.StatusOK {
				return fmt.Errorf("lookup %s at %s: %d %v", key, n.HTTPAddr(), code, err)
			}
			if len(r.Replicas) != min(3, len(hosts)) {
				return fmt.Errorf("lookup %s at %s names %d replicas", key, n.HTTPAddr(), len(r.Replicas))
			}
			for _, rep := range r.Replicas {
				if !slices.Contains(hosts, rep.Addr) {
					return fmt.Errorf("lookup %s at %s names host %s", key, n.HTTPAddr(), rep.Addr)
				}
			}
			if i == 0 {
				first = r.Replicas
			} else if !slices.Equal(first, r.Replicas) {
				return fmt.Errorf("lookup %s: %v at %s, %v at %s", key, first, nodes[0].HTTPAddr(), r.Replicas, n.HTTPAddr())
			}
		}
	}
	return nil
}

func waitAgree(t *testing.T, nodes []*node.Node, keys int, within time.Duration) {
	t.Helper()
	var hosts []string
	for _, n := range nodes {
		hosts = append(hosts, n.GRPCAddr())
	}
	deadline := time.Now().Add(within)
	for {
		err := agree(nodes, keys, hosts)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no agreement within %s: %v", within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Three nodes over real gRPC form one ring; a node stopped and restarted on
// its directory without -j rejoins through the peers it remembers.
func TestRingOverGRPC(t *testing.T) {
	a := startNode(t, t.TempDir(), "")
	b := startNode(t, t.TempDir(), a.GRPCAddr())
	cdir := t.TempDir()
	cfg := testConfig(cdir, b.GRPCAddr())
	c, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	track(t, c)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitMember(t, c)
	waitAgree(t, []*node.Node{a, b, c}, 200, 20*time.Second)

	r, _, err := httpLookup(a.HTTPAddr(), "k1", 3)
	if err != nil || len(r.Replicas) != 3 || r.Hash != ring.HashKey([]byte("k1")).String() {
		t.Fatalf("lookup k1 = %+v, %v", r, err)
	}

	// Restart c on the same directory and address, without -j.
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cfg.Join, cfg.GRPCAddr = "", c.GRPCAddr()
	c2, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	track(t, c2)
	ctx, stop = context.WithCancel(context.Background())
	defer func() { stop(); <-done }()
	go func() { done <- c2.Run(ctx) }()
	waitMember(t, c2)
	waitAgree(t, []*node.Node{a, b, c2}, 200, 20*time.Second)
}

func TestLookupBadRequests(t *testing.T) {
	n := startNode(t, t.TempDir(), "")
	for _, q := range []string{"", "?n=3", "?key=a&n=0", "?key=a&n=x", "?key=a&n=1000"} {
		resp, err := web.Get("http://" + n.HTTPAddr() + "/v1/lookup" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("lookup%s: status %d, want 400", q, resp.StatusCode)
		}
	}
	// A single node answers with itself alone.
	r, code, err := httpLookup(n.HTTPAddr(), "x", 3)
	if err != nil || code != 200 || len(r.Replicas) != 1 || r.Replicas[0].Addr != n.GRPCAddr() {
		t.Fatalf("lookup on one node: %d %+v %v", code, r, err)
	}
}

// A node stopped with Leave hands its vnodes' places to their neighbours:
// the remaining nodes stop pointing at it at once, with no maintenance
// round to detect a failure (every node's maintenance is driven by hand).
func TestLeaveOnStop(t *testing.T) {
	start := func(join string, leave bool) (*node.Node, context.CancelFunc, chan error) {
		cfg := testConfig(t.TempDir(), join)
		cfg.Leave = leave
		cfg.Ring.TickInterval = time.Hour
		n, err := node.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		track(t, n)
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()
		t.Cleanup(func() { stop(); <-done })
		waitMember(t, n)
		return n, stop, done
	}
	a, _, _ := start("", false)
	b, _, _ := start(a.GRPCAddr(), false)
	c, stopC, doneC := start(a.GRPCAddr(), true)
	hosts := []string{a.GRPCAddr(), b.GRPCAddr(), c.GRPCAddr()}
	round := func() {
		for _, n := range []*node.Node{a, b, c} {
			n.Ring().Tick(context.Background())
		}
	}
	// Lookups can agree before every predecessor is settled, and a leaving
	// vnode tells the predecessor it knows: wait until every vnode's first
	// successor and predecessor are the true ones.
	for i := 0; settled(a, b, c) != nil || agree([]*node.Node{a, b, c}, 100, hosts) != nil; i++ {
		if i == 200 {
			t.Fatalf("not settled after 200 rounds: %v; %v", settled(a, b, c), agree([]*node.Node{a, b, c}, 100, hosts))
		}
		round()
	}
	stopC()
	if err := <-doneC; err != nil {
		t.Fatal(err)
	}
	doneC <- nil // for the cleanup
	for _, n := range []*node.Node{a, b} {
		for _, v := range n.Ring().Status() {
			if v.Pred.Addr == c.GRPCAddr() || v.Succs[0].Addr == c.GRPCAddr() {
				t.Fatalf("after c left, %s still points at it: pred %s, succ %s", v.Self, v.Pred, v.Succs[0])
			}
		}
	}
}

// settled reports why the nodes' vnodes do not yet all have their true
// first successor and predecessor.
func settled(nodes ...*node.Node) error {
	var all []ring.VNodeStatus
	for _, n := range nodes {
		all = append(all, n.Ring().Status()...)
	}
	slices.SortFunc(all, func(x, y ring.VNodeStatus) int { return x.Self.ID.Cmp(y.Self.ID) })
	for i, v := range all {
		succ, pred := all[(i+1)%len(all)].Self, all[(i+len(all)-1)%len(all)].Self
		if len(v.Succs) == 0 || v.Succs[0] != succ || v.Pred != pred {
			return fmt.Errorf("%s: pred %s succ %v, want %s and %s", v.Self, v.Pred, v.Succs, pred, succ)
		}
	}
	return nil
}

// When every node of a cluster restarts at once, without -j, they find each
// other waiting and form one ring again; so do the nodes left when the
// first is gone for good, whose -j names it.
func TestWholeClusterRestart(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	run := func(cfgs []node.Config) ([]*node.Node, func()) {
		nodes := make([]*node.Node, len(cfgs))
		ctx, stop := context.WithCancel(context.Background())
		dones := make([]chan error, len(cfgs))
		for i, cfg := range cfgs {
			n, err := node.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			track(t, n)
			nodes[i], dones[i] = n, make(chan error, 1)
			go func() { dones[i] <- n.Run(ctx) }()
		}
		return nodes, func() {
			stop()
			for _, d := range dones {
				if err := <-d; err != nil {
					t.Error(err)
				}
			}
		}
	}
	cfgs := []node.Config{testConfig(dirs[0], "")}
	first, stopFirst := run(cfgs[:1])
	waitMember(t, first[0])
	cfgs = append(cfgs, testConfig(dirs[1], first[0].GRPCAddr()), testConfig(dirs[2], first[0].GRPCAddr()))
	cfgs[0].GRPCAddr = first[0].GRPCAddr()
	rest, stopRest := run(cfgs[1:])
	for _, n := range rest {
		waitMember(t, n)
	}
	all := append(first, rest...)
	waitAgree(t, all, 100, 20*time.Second)
	stopRest()
	stopFirst()

	for i := range cfgs {
		cfgs[i].GRPCAddr, cfgs[i].Join = all[i].GRPCAddr(), ""
	}
	again, stopAgain := run(cfgs)
	for _, n := range again {
		waitMember(t, n)
	}
	waitAgree(t, again, 100, 20*time.Second)
	stopAgain()

	// After a power cut that the first node does not survive, the others
	// come back with their -j still naming it: they form the ring without
	// it, instead of giving up on joining.
	for i := range cfgs {
		cfgs[i].GRPCAddr, cfgs[i].Join = again[i].GRPCAddr(), again[0].GRPCAddr()
	}
	rest, stopRest = run(cfgs[1:])
	defer stopRest()
	for _, n := range rest {
		waitMember(t, n)
	}
	waitAgree(t, rest, 100, 20*time.Second)
}
