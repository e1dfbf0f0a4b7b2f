package txlog

import (
	"errors"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/memnet"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/store"
)

// staticConfig is the configuration of the services of tests on a static
// placer: quick timeouts, three replicas.
func staticConfig(addr string) Config {
	return Config{Addr: addr, Replicas: 3, CallTimeout: 100 * time.Millisecond, Patience: 300 * time.Millisecond}
}

// staticServices runs a service for every host of placer's set on net,
// N = 3; wrap, if set, gives a host another transport.
func staticServices(t *testing.T, net *Network, placer *staticPlacer, wrap func(addr string, tr Transport) Transport) map[string]*Service {
	t.Helper()
	svcs := map[string]*Service{}
	for _, addr := range placer.set {
		tr := net.Transport(addr)
		if wrap != nil {
			tr = wrap(addr, tr)
		}
		svc, err := New(staticConfig(addr), placer, tr, store.NewMem())
		if err != nil {
			t.Fatal(err)
		}
		svc.NoteHosts(3)
		net.Attach(addr, svc)
		svcs[addr] = svc
	}
	return svcs
}

// A leader cut off from the others, which has not heard that another took
// over, must not answer a compare-and-set with a conflict read from its
// stale records (the Jepsen harness saw one: a 412 for the value the key
// held). It answers once a majority confirms it still leads; cut off, it
// cannot, so the write fails as unavailable and the caller tries again.
func TestDeposedLeaderReportsNoConflict(t *testing.T) {
	faults := memnet.New(1)
	net := NewNetwork(faults)
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	svcs := staticServices(t, net, placer, nil)
	ctx := ctxFor(t, 10*time.Second)
	const part = "kv/deposed"
	if _, err := svcs["a"].Write(ctx, part, set("k", "v1"), level.Quorum); err != nil {
		t.Fatal(err)
	}
	faults.Partition([]string{"a"}, []string{"b", "c"})
	placer.lead("b")
	ref, err := svcs["b"].Write(ctx, part, set("k", "v2"), level.Quorum)
	if err != nil {
		t.Fatal(err)
	}
	// a still leads in its own view; a client whose view is a's asks it.
	cas := Request{Partition: part, Level: level.Quorum, Kind: KindWrite, ID: NewWriteID(),
		Write: []Change{{Name: "k", Value: []byte("v3"), IfMatch: &ref.Hash}}}
	_, err = svcs["a"].lead(ctx, cas, []string{"a", "b", "c"})
	if errors.Is(err, ErrConflict) {
		t.Fatalf("the deposed leader reported a conflict from its stale records: %v", err)
	}
	if err == nil {
		t.Fatal("the deposed leader applied a write cut off from every other replica")
	}
	// b, the real leader, applies it.
	faults.Heal()
	if _, err := svcs["b"].Do(ctx, cas); err != nil {
		t.Fatalf("the compare-and-set at the real leader: %v", err)
	}
}
