package txlog

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/difuse/difuse/memnet"
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
// the first entry, does not block the creation for good: once the ring no
// longer names it, the members that remain (a majority of the hosts) finish
// it.
func TestCreationSurvivesDeadMember(t *testing.T) {
	faults := memnet.New(1)
	net := NewNetwork(faults)
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	var armed atomic.Bool
	svcs := staticServices(t, net, placer, func(addr string, tr Transport) Transport {
		return appendDropper{Transport: tr, to: "c", armed: &armed}
	})
	ctx := ctxFor(t, 20*time.Second)
	const part = "kv/created"
	armed.Store(true)
	short, cancel := context.WithTimeout(ctx, time.Second)
	_, err := svcs["a"].Write(short, part, set("k", "v"), Quorum)
	cancel()
	if err == nil {
		t.Fatal("a creation that c never acknowledged committed")
	}
	p, _ := svcs["b"].ps.get(part)
	p.mu.Lock()
	last, config := p.last, p.config
	p.mu.Unlock()
	if last == 0 || len(config) != 3 {
		t.Fatalf("b holds %d entries, config %v; want the creation's first entry, uncommitted", last, config)
	}
	faults.Kill("c")
	placer.mu.Lock()
	placer.set = []string{"a", "b"}
	placer.mu.Unlock()
	if _, err := svcs["a"].Write(ctx, part, set("k", "v2"), Quorum); err != nil {
		t.Fatalf("write once the ring dropped the dead member: %v", err)
	}
	if r, err := svcs["b"].Read(ctx, part, "k", Quorum); err != nil || string(r.Value) != "v2" {
		t.Fatalf("read: %+v, %v", r, err)
	}
}
