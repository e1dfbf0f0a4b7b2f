package txlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/memnet"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/store"
)

// cluster is an in-memory cluster: ring hosts and transaction-log services
// over one fault model, with maintenance running in the background.
type cluster struct {
	t       *testing.T
	faults  *memnet.Faults
	ringNet *ring.Network
	txNet   *Network
	mu      sync.Mutex
	hosts   map[string]*host
	addrs   []string
	// gates, if set, stand between each host and its store.
	gates map[string]*syncGate
}

// syncGate is a host's store whose syncs can be held (a slow disk) or made
// to fail (a broken one).
type syncGate struct {
	kv
	hold sync.RWMutex // a sync waits while it is locked
	fail atomic.Bool
}

func (g *syncGate) Sync() error {
	g.hold.RLock()
	g.hold.RUnlock() // only waited for the holder
	if g.fail.Load() {
		return errors.New("sync: input/output error")
	}
	return g.kv.Sync()
}

type host struct {
	addr string
	db   *store.Mem
	ring *ring.Host
	svc  *Service
	stop context.CancelFunc
	done chan struct{}
}

const testCallTimeout = 100 * time.Millisecond

func newCluster(t *testing.T, n int) *cluster { return newClusterGated(t, n, false) }

// newClusterGated is newCluster, with a syncGate before each host's store
// if gated.
func newClusterGated(t *testing.T, n int, gated bool) *cluster {
	faults := memnet.New(1)
	c := &cluster{t: t, faults: faults, ringNet: ring.NewNetworkWith(faults), txNet: NewNetwork(faults), hosts: map[string]*host{}}
	if gated {
		c.gates = map[string]*syncGate{}
	}
	for i := range n {
		addr := fmt.Sprintf("h%d", i)
		c.addrs = append(c.addrs, addr)
		c.start(addr, store.NewMem(), i > 0)
	}
	t.Cleanup(func() {
		for _, h := range c.hosts {
			h.stop()
			<-h.done
		}
	})
	c.settle()
	for _, h := range c.hosts {
		h.svc.NoteHosts(n)
	}
	return c
}

// start runs a host at addr on db, joining the ring through h0 if join.
func (c *cluster) start(addr string, db *store.Mem, join bool) *host {
	c.t.Helper()
	h, err := c.tryStart(addr, db, join)
	if err != nil {
		c.t.Fatal(err)
	}
	return h
}

// tryStart is start, returning its error.
func (c *cluster) tryStart(addr string, db *store.Mem, join bool) (*host, error) {
	rh, err := ring.New(ring.Config{Addr: addr, TickInterval: 5 * time.Millisecond, CallTimeout: testCallTimeout}, c.ringNet.Transport(addr))
	if err != nil {
		return nil, err
	}
	c.ringNet.Attach(addr, rh)
	if join {
		var err error
		for i := 0; i < 2000; i++ {
			for _, via := range c.addrs {
				if via != addr && !c.faults.Down(via) {
					if err = rh.Join(context.Background(), via); err == nil {
						break
					}
				}
			}
			if err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			return nil, fmt.Errorf("join %s: %w", addr, err)
		}
	} else if err := rh.Create(); err != nil {
		return nil, err
	}
	var d kv = db
	if c.gates != nil {
		g := c.gates[addr]
		if g == nil {
			g = &syncGate{kv: db}
			c.gates[addr] = g
		}
		d = g
	}
	svc, err := New(Config{Addr: addr, CallTimeout: testCallTimeout, Logger: testLogger}, rh, c.txNet.Transport(addr), d)
	if err != nil {
		return nil, err
	}
	c.txNet.Attach(addr, svc)
	ctx, stop := context.WithCancel(context.Background())
	h := &host{addr: addr, db: db, ring: rh, svc: svc, stop: stop, done: make(chan struct{})}
	go func() { defer close(h.done); rh.Run(ctx) }()
	c.mu.Lock()
	c.hosts[addr] = h
	c.mu.Unlock()
	return h, nil
}

func (c *cluster) host(addr string) *host {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hosts[addr]
}

// kill makes a host unreachable and stops its maintenance; its store stays.
func (c *cluster) kill(addr string) {
	c.faults.Kill(addr)
	h := c.host(addr)
	h.svc.Close() // a dead process writes nothing more to its disk
	h.stop()
	<-h.done
}

// restart brings a killed host back as a new process on its old store.
func (c *cluster) restart(addr string) {
	c.t.Helper()
	if err := c.tryRestart(addr); err != nil {
		c.t.Fatal(err)
	}
}

// tryRestart is restart, returning its error; a host that cannot rejoin
// stays dead.
func (c *cluster) tryRestart(addr string) error {
	c.faults.Revive(addr)
	if _, err := c.tryStart(addr, c.host(addr).db, true); err != nil {
		c.faults.Kill(addr)
		return err
	}
	return nil
}

// settle waits until every live host's lookups agree for a few keys.
func (c *cluster) settle() {
	c.t.Helper()
	if !c.trySettle() {
		c.t.Fatal("ring did not settle in 10 s")
	}
}

// trySettle is settle, reporting whether the ring settled.
func (c *cluster) trySettle() bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c.agree() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func (c *cluster) agree() bool {
	for k := range 20 {
		key := ring.HashKey(fmt.Appendf(nil, "settle-%d", k))
		var first []ring.Ref
		for _, a := range c.addrs {
			if c.faults.Down(a) {
				continue
			}
			res, err := c.host(a).ring.Lookup(context.Background(), key, 3)
			if err != nil || len(res.Replicas) != min(3, c.live()) {
				return false
			}
			for _, r := range res.Replicas {
				if c.faults.Down(r.Addr) {
					return false
				}
			}
			if first == nil {
				first = res.Replicas
			} else if fmt.Sprint(first) != fmt.Sprint(res.Replicas) {
				return false
			}
		}
	}
	return true
}

func (c *cluster) live() int {
	n := 0
	for _, a := range c.addrs {
		if !c.faults.Down(a) {
			n++
		}
	}
	return n
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func set(name string, v string) []Change { return []Change{{Name: name, Value: []byte(v)}} }

func TestWriteReadCASDelete(t *testing.T) {
	c := newCluster(t, 3)
	svc := c.host("h1").svc
	ctx := ctxFor(t, 10*time.Second)
	ref, err := svc.Write(ctx, "p", set("a", "1"), level.Quorum)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range c.addrs {
		for _, lvl := range []level.Level{level.Quorum, level.All, level.Leader, level.Lazy} {
			r, err := c.host(a).svc.Read(ctx, "p", "a", lvl)
			if lvl == level.Lazy && err == nil && !r.Exists {
				continue // a lazy read may be behind
			}
			if err != nil || string(r.Value) != "1" || r.Hash != ref.Hash {
				t.Fatalf("read at %s from %s = %+v, %v", lvl, a, r, err)
			}
		}
	}
	// Compare-and-set.
	stale := Hash{1}
	if _, err := svc.Write(ctx, "p", []Change{{Name: "a", Value: []byte("x"), IfMatch: &stale}}, level.Quorum); !errorsIs(err, ErrConflict) {
		t.Fatalf("CAS with a wrong hash: %v", err)
	}
	ref2, err := svc.Write(ctx, "p", []Change{{Name: "a", Value: []byte("2"), IfMatch: &ref.Hash}}, level.Quorum)
	if err != nil {
		t.Fatal(err)
	}
	none := Hash{}
	if _, err := svc.Write(ctx, "p", []Change{{Name: "a", Value: []byte("3"), IfMatch: &none}}, level.Quorum); !errorsIs(err, ErrConflict) {
		t.Fatalf("create-only write of an existing record: %v", err)
	}
	if _, err := svc.Write(ctx, "p", []Change{{Name: "b", Value: []byte("b1"), IfMatch: &none}}, level.Quorum); err != nil {
		t.Fatalf("create-only write of a new record: %v", err)
	}
	// Two records in one transaction.
	if _, err := svc.Write(ctx, "p", []Change{{Name: "a", Delete: true}, {Name: "c", Value: []byte("c1")}}, level.All); err != nil {
		t.Fatal(err)
	}
	if _, err := c.host("h2").svc.Read(ctx, "p", "a", level.Quorum); !errorsIs(err, ErrNotFound) {
		t.Fatalf("read of a deleted record: %v", err)
	}
	h, err := svc.History(ctx, "p", "a")
	if err != nil || len(h) != 3 || h[1].Hash() != ref2.Hash {
		t.Fatalf("history of a = %d entries, %v", len(h), err)
	}
	for i, tx := range h {
		if tx.Ops[0].Name != "a" && tx.Ops[len(tx.Ops)-1].Name != "a" {
			t.Fatalf("history entry %d does not touch a", i)
		}
	}
	// Bad requests.
	for _, req := range []Request{
		{Partition: "", Name: "a"},
		{Partition: "p", Kind: KindWrite, Write: []Change{}},
		{Partition: "p", Kind: KindWrite, Write: set("a", string(make([]byte, 2<<20)))},
		{Partition: "p", Kind: KindWrite, Write: append(set("a", string(make([]byte, 600<<10))), set("b", string(make([]byte, 600<<10)))...)},
		{Partition: "p", Kind: KindWrite, Write: make([]Change, MaxChanges+1)},
		{Partition: "p", Level: level.Lazy, Kind: KindWrite, Write: set("a", "1")},
		{Partition: "p", Kind: KindWrite, Write: []Change{{Name: "a"}, {Name: "a"}}},
		{Partition: "p", Kind: KindWrite, Write: []Change{{Name: "a", Delete: true, Value: []byte("x")}}},
		{Partition: "p", Kind: KindRead, Write: set("a", "1")},
		{Partition: "p", Kind: 9},
		{Partition: "p", Level: 9},
		{Partition: string([]byte{0xff}), Name: "a"},
	} {
		if _, err := svc.Do(ctx, req); !errorsIs(err, ErrBadRequest) {
			t.Errorf("request %+v: %v, want ErrBadRequest", req.Partition, err)
		}
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

var testLogger = func() *slog.Logger {
	if os.Getenv("TXLOG_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}()

// fullLog reads a host's whole log of a partition, batch by batch.
func fullLog(t *testing.T, svc *Service, partition string) []*Tx {
	t.Helper()
	var out []*Tx
	for {
		batch, err := svc.HandleFetch(partition, uint64(len(out))+1, batchEntries)
		if errors.Is(err, ErrNoPartition) {
			return nil // this host holds nothing of it
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) == 0 {
			return out
		}
		out = append(out, batch...)
	}
}
