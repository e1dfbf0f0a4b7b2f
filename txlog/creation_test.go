package txlog

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/memnet"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/store"
)

// appendDropper loses every Append to one host while it is armed.
type appendDropper struct {
	Transport
	to    string
	armed *atomic.Bool
}

func (d appendDropper) Append(ctx context.Context, to string, req AppendRequest) (AppendReply, error) {
	if d.armed.Load() && to == d.to {
		return AppendReply{}, errors.New("dropped")
	}
	return d.Transport.Append(ctx, to, req)
}

// A member that dies while its partition is being created, before it took
// the first entry, does not block the creation for good. In a cluster of
// three hosts the ring then names the two that remain (a majority of the
// hosts), and they finish it. In a larger one the ring names another host
// in the dead one's place, and the hosts of that new set finish it: the
// Jepsen harness saw a directory's partition whose creation named a node
// lost for good stay uncreated, its directory listed but failing with EIO.
func TestCreationSurvivesDeadMember(t *testing.T) {
	for _, tc := range []struct {
		name  string
		hosts []string
		after []string // the ring's set once c is gone
		// The set in force at the end: a set the ring names fewer than
		// three hosts for keeps a member that is away (see NextConfig).
		want []string
	}{
		{"three hosts", []string{"a", "b", "c"}, []string{"a", "b"}, []string{"a", "b", "c"}},
		{"five hosts", []string{"a", "b", "c", "d", "e"}, []string{"a", "b", "d"}, []string{"a", "b", "d"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			faults := memnet.New(1)
			net := NewNetwork(faults)
			placer := &staticPlacer{set: tc.hosts}
			var armed atomic.Bool
			svcs := staticServices(t, net, placer, func(addr string, tr Transport) Transport {
				return appendDropper{Transport: tr, to: "c", armed: &armed}
			})
			for _, svc := range svcs {
				svc.NoteHosts(len(tc.hosts))
			}
			ctx := ctxFor(t, 20*time.Second)
			const part = "kv/created"
			armed.Store(true)
			// The write waits while the creation cannot finish: nothing of
			// it was appended, so it is tried again once the ring drops c.
			done := make(chan error, 1)
			go func() {
				_, err := svcs["a"].Write(ctx, part, set("k", "v"), level.Quorum)
				done <- err
			}()
			var last uint64
			var config []string
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if p, err := svcs["b"].ps.find(part); err == nil {
					p.mu.Lock()
					last, config = p.last, p.config
					p.mu.Unlock()
					if last > 0 {
						break
					}
				}
			}
			if last == 0 || !sameSet(config, []string{"a", "b", "c"}) {
				t.Fatalf("b holds %d entries, config %v; want the creation's first entry, uncommitted", last, config)
			}
			select {
			case err := <-done:
				t.Fatalf("a creation that c never acknowledged ended (%v)", err)
			case <-time.After(200 * time.Millisecond):
			}
			faults.Kill("c")
			placer.mu.Lock()
			placer.set = tc.after
			placer.mu.Unlock()
			if err := <-done; err != nil {
				t.Fatalf("the write that waited for the creation: %v", err)
			}
			if _, err := svcs["a"].Write(ctx, part, set("k", "v2"), level.Quorum); err != nil {
				t.Fatalf("write once the ring dropped the dead member: %v", err)
			}
			if r, err := svcs["b"].Read(ctx, part, "k", level.Quorum); err != nil || string(r.Value) != "v2" {
				t.Fatalf("read: %+v, %v", r, err)
			}
			p, _ := svcs["a"].ps.get(part)
			p.mu.Lock()
			config = p.config
			p.mu.Unlock()
			if !sameSet(config, tc.want) {
				t.Errorf("the set in force is %v; want %v", config, tc.want)
			}
		})
	}
}

// Two hosts whose views of a changing ring name disjoint replica sets for
// a key ({a, b, c} and {d, e, f}) each create the partition with every
// member of their own set, and the two never meet: the Jepsen harness saw
// acknowledged writes read back empty after a power cut of a whole
// cluster, when one node started a ring alone and four joined it at once.
// A host creates a partition only on a ring that has been still for
// CreationSettle; once the views agree, the one partition is created.
func TestNoCreationOnChangingRing(t *testing.T) {
	for _, settle := range []time.Duration{0, time.Hour} {
		faults := memnet.New(1)
		net := NewNetwork(faults)
		abc := &staticPlacer{set: []string{"a", "b", "c"}}
		def := &staticPlacer{set: []string{"d", "e", "f"}}
		svcs := map[string]*Service{}
		for _, addr := range []string{"a", "b", "c", "d", "e", "f"} {
			placer := abc
			if addr >= "d" {
				placer = def
			}
			svc, err := New(Config{Addr: addr, Replicas: 3, CallTimeout: 100 * time.Millisecond, Patience: 300 * time.Millisecond,
				CreationSettle: settle}, placer, net.Transport(addr), store.NewMem())
			if err != nil {
				t.Fatal(err)
			}
			svc.NoteHosts(6)
			svc.NoteRingChange()
			net.Attach(addr, svc)
			svcs[addr] = svc
		}
		ctx := ctxFor(t, 20*time.Second)
		const part = "kv/new"
		_, errA := svcs["a"].Write(ctx, part, set("k", "from a"), level.Quorum)
		_, errD := svcs["d"].Write(ctx, part, set("k", "from d"), level.Quorum)
		if settle == 0 {
			// Without the wait, the fork this test is about.
			if errA != nil || errD != nil {
				t.Fatalf("without a wait, both creations should succeed (the fork): %v, %v", errA, errD)
			}
			continue
		}
		if errA == nil || errD == nil {
			t.Fatalf("a partition was created on a ring that just changed: %v, %v", errA, errD)
		}
		if !errors.Is(errA, ErrTakeover) {
			t.Errorf("the refusal should be a takeover that did not happen (retried while the ring settles): %v", errA)
		}
		// The views agree, and the ring has been still for longer than
		// the wait: one creation, which every host then finds.
		def.mu.Lock()
		def.set = []string{"a", "b", "c"}
		def.mu.Unlock()
		for _, svc := range svcs {
			svc.ringChanged.Store(-int64(2 * settle))
		}
		if _, err := svcs["a"].Write(ctx, part, set("k", "from a"), level.Quorum); err != nil {
			t.Fatalf("creation on a still ring: %v", err)
		}
		if r, err := svcs["d"].Read(ctx, part, "k", level.Quorum); err != nil || string(r.Value) != "from a" {
			t.Fatalf("read through d: %+v, %v", r, err)
		}
	}
}

// Three hosts that join on one arc take the front of a key's successors,
// and if the copies they made before joining missed its partition, the
// ring's set for it holds none of its replicas. A takeover there must find
// the partition on the hosts after the set, not create it afresh: the
// Jepsen harness saw keys read back empty after joins and replacements,
// their writes left in the old instance beside the new one.
func TestNoCreationBesideAnExistingPartition(t *testing.T) {
	faults := memnet.New(1)
	net := NewNetwork(faults)
	placer := &staticPlacer{set: []string{"d", "e", "f", "a", "b", "c"}}
	svcs := staticServices(t, net, placer, nil)
	for _, svc := range svcs {
		svc.NoteHosts(6)
	}
	ctx := ctxFor(t, 20*time.Second)
	const part = "kv/existing"
	if _, err := svcs["d"].Write(ctx, part, set("k", "v"), level.All); err != nil {
		t.Fatal(err)
	}
	placer.mu.Lock()
	placer.set = []string{"a", "b", "c", "d", "e", "f"}
	placer.mu.Unlock()
	r, err := svcs["a"].Read(ctx, part, "k", level.Quorum)
	if err != nil || !r.Exists || string(r.Value) != "v" {
		t.Fatalf("read through a host of the new set: %+v, %v; want the value written before", r, err)
	}
	if _, err := svcs["a"].Write(ctx, part, set("k", "v2"), level.All); err != nil {
		t.Fatal(err)
	}
	p, _ := svcs["a"].ps.get(part)
	p.mu.Lock()
	config := p.config
	p.mu.Unlock()
	if !sameSet(config, []string{"a", "b", "c"}) {
		t.Errorf("the set in force is %v; want the ring's [a b c]", config)
	}
}
