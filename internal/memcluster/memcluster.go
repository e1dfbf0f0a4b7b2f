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
	"github.com/difuse/difuse/internal/memnet"
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
	// RingTransport reaches the other hosts' ring hosts, as this host.
	RingTransport ring.Transport
}

// Cluster is hosts on in-memory networks that share one fault model.
type Cluster struct {
	Faults   *memnet.Faults
	Hosts    []*Host
	t        testing.TB
	ringNet  *ring.Network
	logNet   *txlog.Network
	blockNet *blockstore.Network
}

// New starts n hosts named h0, h1, ..., waits until every key has
// min(3, n) replicas, and stops them when the test ends.
func New(t testing.TB, n int) []*Host { return Start(t, n).Hosts }

// Start is New returning the cluster, so that a test can add hosts and
// inject faults.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	faults := memnet.New(1)
	c := &Cluster{Faults: faults, t: t, ringNet: ring.NewNetworkWith(faults), logNet: txlog.NewNetwork(faults), blockNet: blockstore.NewNetwork(faults)}
	for range n {
		c.Add()
	}
	return c
}

// Add starts one more host, joins it to the ring through h0 (or creates
// the ring), waits until every host places keys on min(3, hosts) replicas,
// and returns it.
func (c *Cluster) Add() *Host {
	c.t.Helper()
	h := c.NewHost()
	c.Join(h)
	return h
}

// NewHost starts one more host, serving but not yet in the ring.
func (c *Cluster) NewHost() *Host {
	t := c.t
	t.Helper()
	addr := fmt.Sprintf("h%d", len(c.Hosts))
	rh, err := ring.New(ring.Config{Addr: addr, TickInterval: 5 * time.Millisecond, CallTimeout: 100 * time.Millisecond}, c.ringNet.Transport(addr))
	if err != nil {
		t.Fatal(err)
	}
	c.ringNet.Attach(addr, rh)
	svc, err := txlog.New(txlog.Config{Addr: addr, CallTimeout: 100 * time.Millisecond}, rh, c.logNet.Transport(addr), store.NewMem())
	if err != nil {
		t.Fatal(err)
	}
	c.logNet.Attach(addr, svc)
	local, err := blockstore.OpenLocal(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := blockstore.New(blockstore.Config{Addr: addr, CallTimeout: 200 * time.Millisecond}, rh, c.blockNet.Transport(addr), local)
	if err != nil {
		t.Fatal(err)
	}
	c.blockNet.Attach(addr, blocks)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rh.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; svc.Close(); blocks.Wait() })
	h := &Host{Addr: addr, Ring: rh, Log: svc, Blocks: blocks, RingTransport: c.ringNet.Transport(addr)}
	c.Hosts = append(c.Hosts, h)
	return h
}

// Join makes h a member of the ring, through h0 (or creates the ring if h
// is h0), and waits until every member places keys on min(3, members)
// replicas.
func (c *Cluster) Join(h *Host) {
	t := c.t
	t.Helper()
	var err error
	if h.Addr == "h0" {
		err = h.Ring.Create()
	} else {
		err = h.Ring.Join(context.Background(), "h0")
	}
	if err != nil {
		t.Fatal(err)
	}
	c.WaitSettled()
	for _, h := range c.Hosts {
		h.Log.NoteHosts(len(c.Hosts))
	}
}

// WaitSettled waits until every host in the ring that is up places keys
// on min(3, such hosts) replicas.
func (c *Cluster) WaitSettled() {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !c.settled() {
		if time.Now().After(deadline) {
			c.t.Fatal("memcluster: the ring did not settle in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settled reports whether every member host that is up finds
// min(3, such hosts) replicas for a sample of keys.
func (c *Cluster) settled() bool {
	var up []*Host
	for _, h := range c.Hosts {
		if h.Ring.Member() && !c.Faults.Down(h.Addr) {
			up = append(up, h)
		}
	}
	members := len(up)
	for _, h := range up {
		for k := range 64 {
			res, err := h.Ring.Lookup(context.Background(), ring.HashKey([]byte{byte(k)}), 3)
			if err != nil || len(res.Replicas) != min(3, members) {
				return false
			}
		}
	}
	return true
}
