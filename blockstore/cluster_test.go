package blockstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/memnet"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/ring"
)

// testHost is one member of an in-memory cluster.
type testHost struct {
	addr string
	dir  string // the block store's directory
	svc  *Service
	ring *ring.Host
}

// newCluster runs n hosts with the ring and the block store over one
// fault model, maintenance in the background.
func newCluster(t *testing.T, n int) ([]*testHost, *memnet.Faults) {
	t.Helper()
	faults := memnet.New(1)
	ringNet, blockNet := ring.NewNetworkWith(faults), NewNetwork(faults)
	var hosts []*testHost
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
		dir := t.TempDir()
		local, err := OpenLocal(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		svc, err := New(Config{Addr: addr, CallTimeout: 200 * time.Millisecond}, rh, blockNet.Transport(addr), local)
		if err != nil {
			t.Fatal(err)
		}
		blockNet.Attach(addr, svc)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); rh.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done; svc.Wait() })
		hosts = append(hosts, &testHost{addr, dir, svc, rh})
	}
	// Wait until every host places keys on n (up to 3) hosts alike.
	deadline := time.Now().Add(10 * time.Second)
	for !agree(hosts) {
		if time.Now().After(deadline) {
			t.Fatal("ring did not settle")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return hosts, faults
}

// agree reports whether every vnode's successor list covers min(3, n)
// hosts, and lookups of sample keys agree on every host.
func agree(hosts []*testHost) bool {
	for _, h := range hosts {
		for _, v := range h.ring.Status() {
			covered := map[string]bool{v.Self.Addr: true}
			for _, r := range v.Succs {
				covered[r.Addr] = true
			}
			if len(covered) < min(3, len(hosts)) {
				return false
			}
		}
	}
	for k := range 64 {
		var first string
		for _, h := range hosts {
			res, err := h.ring.Lookup(context.Background(), ring.HashKey([]byte{byte(k)}), 3)
			if err != nil || len(res.Replicas) != min(3, len(hosts)) {
				return false
			}
			if s := fmt.Sprint(res.Replicas); first == "" {
				first = s
			} else if s != first {
				return false
			}
		}
	}
	return true
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// storeFile chunks data and sets every block through svc.
func storeFile(t *testing.T, svc *Service, data []byte) []Hash {
	t.Helper()
	c, err := NewChunker(bytes.NewReader(data), ChunkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []Hash
	for {
		b, err := c.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		h, err := svc.Set(ctxFor(t), b, level.Quorum)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
}

// replicaHosts returns the hosts that hold a replica of h in the ring.
func replicaHosts(t *testing.T, hosts []*testHost, h Hash) []*testHost {
	res, err := hosts[0].ring.Lookup(ctxFor(t), ring.ID(h), 3)
	if err != nil {
		t.Fatal(err)
	}
	var out []*testHost
	for _, r := range res.Replicas {
		for _, x := range hosts {
			if x.addr == r.Addr {
				out = append(out, x)
			}
		}
	}
	return out
}

// The same file written twice is stored once on each replica, and the
// second write sends no block anywhere.
func TestSetTwiceStoresOnce(t *testing.T) {
	hosts, _ := newCluster(t, 3)
	size := 64 << 20
	if testing.Short() {
		size = 16 << 20
	}
	data := randomBytes(size, 7)
	first := storeFile(t, hosts[0].svc, data)
	for _, h := range hosts {
		h.svc.Wait()
	}
	before := make([]Stats, len(hosts))
	for i, h := range hosts {
		before[i] = h.svc.Stats()
		if before[i].StoredBytes != int64(size) { // 3 hosts, 3 replicas: every host holds every block
			t.Errorf("%s stores %d bytes of a %d-byte file", h.addr, before[i].StoredBytes, size)
		}
	}
	second := storeFile(t, hosts[0].svc, data)
	for _, h := range hosts {
		h.svc.Wait()
	}
	if fmt.Sprint(first) != fmt.Sprint(second) {
		t.Fatal("the same bytes chunked differently")
	}
	for i, h := range hosts {
		if st := h.svc.Stats(); st.StoredBytes != before[i].StoredBytes || st.Blocks != before[i].Blocks {
			t.Errorf("%s after the second write: %+v, before %+v", h.addr, st, before[i])
		}
	}
	// The host both writes went through saw every byte twice and stored
	// each once: nothing was sent the second time.
	if st := hosts[0].svc.Stats(); st.WrittenBytes != 2*int64(size) || st.NewBytes != int64(size) || st.DedupRatio != 2 {
		t.Errorf("writer's stats: %+v", st)
	}
	// Every block reads back through any host.
	var got []byte
	for i, h := range first {
		b, err := hosts[i%3].svc.Get(ctxFor(t), h, level.Lazy)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the file read back differs")
	}
}

// A block damaged on one replica's disk is detected on read, served from
// another replica and repaired on the bad one; one missing is put back.
func TestDamagedCopyRepaired(t *testing.T) {
	hosts, _ := newCluster(t, 3)
	data := randomBytes(300<<10, 3)
	h, err := hosts[0].svc.Set(ctxFor(t), data, level.All)
	if err != nil {
		t.Fatal(err)
	}
	reps := replicaHosts(t, hosts, h)
	leader := reps[0]
	bad := bytes.Clone(data)
	bad[12345] ^= 0x40
	if err := os.WriteFile(leader.svc.Local().Path(h), bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := reps[1].svc.Local().Delete(h, false); err != nil {
		t.Fatal(err)
	}
	got, err := hosts[2].svc.Get(ctxFor(t), h, level.Leader)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get with the leader's copy damaged: %d bytes, %v", len(got), err)
	}
	for _, x := range hosts {
		x.svc.Wait()
	}
	if b, err := leader.svc.Local().Get(h); err != nil || !bytes.Equal(b, data) {
		t.Errorf("the damaged copy on %s was not repaired: %v", leader.addr, err)
	}
	// A quorum read checks and repairs the copies it did not read.
	if err := reps[1].svc.Local().Delete(h, false); err != nil {
		t.Fatal(err)
	}
	if _, err := hosts[0].svc.Get(ctxFor(t), h, level.All); err != nil {
		t.Fatal(err)
	}
	if ok, _ := reps[1].svc.Local().Has(h); !ok {
		t.Errorf("a read at all did not put the missing copy back on %s", reps[1].addr)
	}
}

// With one of three replicas down each level behaves as documented.
func TestLevelsWithOneReplicaDown(t *testing.T) {
	hosts, faults := newCluster(t, 3)
	faults.Kill("h2")
	// Once the ring has noticed, the two live hosts place every block on
	// themselves.
	deadline := time.Now().Add(10 * time.Second)
	for !agree(hosts[:2]) {
		if time.Now().After(deadline) {
			t.Fatal("the ring did not settle without h2")
		}
		time.Sleep(10 * time.Millisecond)
	}
	live := hosts[0].svc
	for i := range 4 {
		data := randomBytes(10<<10, byte(100+i))
		h := Sum(data)
		for _, l := range []level.Level{level.Quorum, level.Leader, level.Lazy} {
			if _, err := live.Set(ctxFor(t), data, l); err != nil {
				t.Errorf("Set at %s with one replica down: %v", l, err)
			}
		}
		if _, err := live.Set(ctxFor(t), data, level.All); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Set at all with one replica down: %v, want ErrUnavailable", err)
		} else {
			t.Logf("all with one down: %v", err)
		}
		for _, l := range []level.Level{level.Quorum, level.Leader, level.Lazy} {
			if b, err := live.Get(ctxFor(t), h, l); err != nil || !bytes.Equal(b, data) {
				t.Errorf("Get at %s with one replica down: %v", l, err)
			}
		}
		if _, err := live.Get(ctxFor(t), h, level.All); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Get at all with one replica down: %v, want ErrUnavailable", err)
		}
		live.Wait() // replication still under way would put the block back
		if err := live.Delete(ctxFor(t), h, level.All); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Delete at all with one replica down: %v", err)
		}
		if err := live.Delete(ctxFor(t), h, level.Quorum); err != nil {
			t.Errorf("Delete at quorum with one replica down: %v", err)
		}
		if _, err := live.Get(ctxFor(t), h, level.Quorum); !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrUnavailable) {
			t.Errorf("Get after Delete: %v", err)
		}
	}
	if _, err := live.Get(ctxFor(t), Sum([]byte("never stored")), level.Lazy); !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrUnavailable) {
		t.Errorf("Get of an unknown block: %v", err)
	}
}
