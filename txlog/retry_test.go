package txlog

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/memnet"
	"github.com/difuse/difuse/level"
)

// replyLosingTransport loses the replies of the next Forward calls it is
// told to, after they ran, calling then (if set) in their place.
type replyLosingTransport struct {
	Transport
	lose atomic.Int32
	then func()
}

func (t *replyLosingTransport) Forward(ctx context.Context, to string, req Request) (Response, error) {
	resp, err := t.Transport.Forward(ctx, to, req)
	if t.lose.Add(-1) >= 0 {
		if t.then != nil {
			t.then()
		}
		return Response{}, errors.New("connection reset: reply lost")
	}
	return resp, err
}

// TestRetriedWriteAppliedOnce pins what the Jepsen harness found: a write
// whose reply was lost after the leader applied it was retried and applied
// a second time, after later writes, so its value came back. A retry now
// carries the write's ID and gets the first attempt's transaction, from the
// same leader or from a new one that took the log over.
func TestRetriedWriteAppliedOnce(t *testing.T) {
	net := NewNetwork(memnet.New(1))
	placer := &staticPlacer{set: []string{"a", "b", "c"}}
	var lossy *replyLosingTransport
	svcs := staticServices(t, net, placer, func(addr string, tr Transport) Transport {
		if addr != "c" {
			return tr
		}
		lossy = &replyLosingTransport{Transport: tr}
		return lossy
	})
	ctx := ctxFor(t, 10*time.Second)
	const part = "kv/retry"
	first, err := svcs["a"].Write(ctx, part, set("k", "v0"), level.All)
	if err != nil {
		t.Fatal(err)
	}
	ifMatch := first.Hash

	count := func(leader, value string) int {
		n := 0
		for _, tx := range fullLog(t, svcs[leader], part) {
			for _, op := range tx.Ops {
				if op.Name == "k" && string(op.Value) == value {
					n++
				}
			}
		}
		return n
	}

	// The same leader answers the retry.
	lossy.lose.Store(1)
	ref, err := svcs["c"].Write(ctx, part, set("k", "v1"), level.All)
	if err != nil {
		t.Fatalf("write through c: %v", err)
	}
	if n := count("a", "v1"); n != 1 {
		t.Fatalf("v1 applied %d times", n)
	}

	// A compare-and-set whose reply is lost, retried after the leadership
	// moved to b: b finds the first attempt in the log it took over, so the
	// retry neither conflicts with it nor applies it again.
	lossy.lose.Store(1)
	lossy.then = func() { placer.lead("b") }
	cas := []Change{{Name: "k", Value: []byte("v2"), IfMatch: &ref.Hash}}
	ref2, err := svcs["c"].Write(ctx, part, cas, level.Quorum)
	if err != nil {
		t.Fatalf("compare-and-set through c: %v", err)
	}
	if n := count("b", "v2"); n != 1 {
		t.Fatalf("v2 applied %d times", n)
	}
	rec, err := svcs["c"].Read(ctx, part, "k", level.All)
	if err != nil || string(rec.Value) != "v2" || rec.Hash != ref2.Hash {
		t.Fatalf("read %q at %s (%v), want v2 at %s", rec.Value, rec.Hash, err, ref2.Hash)
	}

	// A write of the first value with a fresh ID is a new write.
	if _, err := svcs["c"].Write(ctx, part, []Change{{Name: "k", Value: []byte("v2"), IfMatch: &ifMatch}}, level.Quorum); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale compare-and-set: %v, want a conflict", err)
	}
}
