// Package memcluster runs a cluster of hosts in one process, over
// in-memory networks, for tests of what sits on the transaction logs and
// the block store.
package memcluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/memnet"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/store"
	"github.com/difuse/difuse/txlog"
)

// Host is one member: its ring host, transaction logs and block store.
type Host struct {
	Addr   string
	Ring   *ring.Host
	Log    *txlog.Service
	Blocks *blockstore.Service
}

// New starts n hosts named h0, h1, ..., waits until every key has
// min(3, n) replicas, and stops them when the test ends.
func New(t testing.TB, n int) []*Host {
	t.Helper()
	faults := memnet.New(1)
	ringNet, logNet, blockNet := ring.NewNetworkWith(faults), txlog.NewNetwork(faults), blockstore.NewNetwork(faults)
	var out []*Host
	for i := range n {
		addr := fmt.Sprintf("h%d", i)
		rh, err := ring.New(ring.Config{Addr: addr, TickInterval: 5 * time.Millisecond, CallTimeout: 100 * time.Millisecond}, ringNet.Transport(addr))
		if err != nil {
			t.Fatal(err)
		}
		ringNet.Attach(addr, rh)
		if i == 0 {
			err = rh.Create()
		} else {
			err = rh.Join(context.Background(), "h0")
		}
		if err != nil {
			t.Fatal(err)
		}
		svc, err := txlog.New(txlog.Config{Addr: addr, CallTimeout: 100 * time.Millisecond}, rh, logNet.Transport(addr), store.NewMem())
		if err != nil {
			t.Fatal(err)
		}
		logNet.Attach(addr, svc)
		local, err := blockstore.OpenLocal(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		blocks, err := blockstore.New(blockstore.Config{Addr: addr, CallTimeout: 200 * time.Millisecond}, rh, blockNet.Transport(addr), local)
		if err != nil {
			t.Fatal(err)
		}
		blockNet.Attach(addr, blocks)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); rh.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done; svc.Close(); blocks.Wait() })
		out = append(out, &Host{Addr: addr, Ring: rh, Log: svc, Blocks: blocks})
	}
	deadline := time.Now().Add(10 * time.Second)
	for !settled(out) {
		if time.Now().After(deadline) {
			t.Fatal("memcluster: the ring did not settle in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, h := range out {
		h.Log.NoteHosts(n)
	}
	return out
}

// settled reports whether every host finds min(3, n) replicas for a
// sample of keys.
func settled(hosts []*Host) bool {
	for _, h := range hosts {
		for k := range 64 {
			res, err := h.Ring.Lookup(context.Background(), ring.HashKey([]byte{byte(k)}), 3)
			if err != nil || len(res.Replicas) != min(3, len(hosts)) {
				return false
			}
		}
	}
	return true
}
