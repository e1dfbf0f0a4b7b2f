package txlogrpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/ring/ringrpc"
	"github.com/difuse/difuse/store"
	"github.com/difuse/difuse/store/badgerdb"
	"github.com/difuse/difuse/txlog"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

// host is one member of a loopback gRPC cluster.
type host struct {
	addr string
	ring *ring.Host
	svc  *txlog.Service
	srv  *grpc.Server
	db   interface {
		Get([]byte) ([]byte, error)
		Update(func(store.Writer) error) error
		Scan([]byte, func(k, v []byte) error) error
		ScanFrom(prefix, from []byte, fn func(k, v []byte) error) error
		Sync() error
	}
}

// startCluster runs n hosts on loopback gRPC, each with the ring and the
// transaction logs, on in-memory stores or, with onDisk, on Badger in
// temporary directories.
func startCluster(tb testing.TB, n int, onDisk bool) []*host {
	tb.Helper()
	return startClusterWith(tb, n, onDisk, 500*time.Millisecond)
}

// startClusterWith is startCluster with the ring's and the logs' calls
// bounded by callTimeout: moving large values under the race detector
// takes longer than the half second the other tests allow.
func startClusterWith(tb testing.TB, n int, onDisk bool, callTimeout time.Duration) []*host {
	tb.Helper()
	var hosts []*host
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		h := &host{addr: ln.Addr().String()}
		if onDisk {
			db, err := badgerdb.Open(badgerdb.Options{Dir: tb.TempDir(), MinFreeBytes: -1, GCInterval: -1})
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { db.Close() })
			h.db = db
		} else {
			h.db = store.NewMem()
		}
		pool := wire.NewPool(insecure.NewCredentials())
		tb.Cleanup(func() { pool.Close() })
		if h.ring, err = ring.New(ring.Config{Addr: h.addr, TickInterval: 50 * time.Millisecond, CallTimeout: callTimeout}, ringrpc.NewTransport(pool)); err != nil {
			tb.Fatal(err)
		}
		if h.svc, err = txlog.New(txlog.Config{Addr: h.addr, CallTimeout: callTimeout}, h.ring, NewTransport(pool), h.db); err != nil {
			tb.Fatal(err)
		}
		h.serve(tb, ln)
		if i == 0 {
			if err := h.ring.Create(); err != nil {
				tb.Fatal(err)
			}
		} else if err := h.ring.Join(context.Background(), hosts[0].addr); err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); h.ring.Run(ctx) }()
		tb.Cleanup(func() { cancel(); <-done; h.svc.Close() })
		hosts = append(hosts, h)
	}
	waitSettled(tb, hosts)
	return hosts
}

// serve serves the host's ring and transaction log on ln.
func (h *host) serve(tb testing.TB, ln net.Listener) {
	h.srv = grpc.NewServer(wire.ServerOptions(nil)...)
	ringrpc.Register(h.srv, h.ring)
	Register(h.srv, h.svc)
	go h.srv.Serve(ln)
	tb.Cleanup(h.srv.Stop)
}

// waitSettled waits until every host's lookups agree on full replica sets.
func waitSettled(tb testing.TB, hosts []*host) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if agree(hosts) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatal("ring did not settle in 30 s")
}

func agree(hosts []*host) bool {
	for k := range 64 {
		key := ring.HashKey(fmt.Appendf(nil, "settle-%d", k))
		var first string
		for _, h := range hosts {
			res, err := h.ring.Lookup(context.Background(), key, 3)
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

func ctxFor(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

func set(name, v string) []txlog.Change { return []txlog.Change{{Name: name, Value: []byte(v)}} }

// Requests sent to any host reach the leader over gRPC, and the txlog
// errors keep their identity across the network.
func TestOverGRPC(t *testing.T) {
	hosts := startCluster(t, 3, false)
	ctx := ctxFor(t, 30*time.Second)
	for i := range 20 {
		p := fmt.Sprintf("p%d", i)
		via := hosts[i%3].svc
		ref, err := via.Write(ctx, p, set("a", "1"), level.Quorum)
		if err != nil {
			t.Fatalf("write %s: %v", p, err)
		}
		r, err := hosts[(i+1)%3].svc.Read(ctx, p, "a", level.All)
		if err != nil || string(r.Value) != "1" || r.Hash != ref.Hash {
			t.Fatalf("read %s at all = %+v, %v", p, r, err)
		}
		var zero txlog.Hash
		_, err = via.Write(ctx, p, []txlog.Change{{Name: "a", Value: []byte("2"), IfMatch: &zero}}, level.Quorum)
		if !errors.Is(err, txlog.ErrConflict) {
			t.Fatalf("create over an existing record: %v, want ErrConflict", err)
		}
		if _, err := via.Write(ctx, p, []txlog.Change{{Name: "a", Value: []byte("2"), IfMatch: &ref.Hash}}, level.Quorum); err != nil {
			t.Fatalf("CAS with the right hash: %v", err)
		}
		if _, err := via.Write(ctx, p, []txlog.Change{{Name: "b", Delete: true}}, level.Quorum); !errors.Is(err, txlog.ErrNotFound) {
			t.Fatalf("delete of a missing record: %v, want ErrNotFound", err)
		}
		h, err := hosts[(i+2)%3].svc.History(ctx, p, "a")
		if err != nil || len(h) != 2 || h[0].Hash() != ref.Hash {
			t.Fatalf("history = %d entries, %v", len(h), err)
		}
		recs, more, err := hosts[(i+1)%3].svc.List(ctx, p, "", "", 0, level.Quorum)
		if err != nil || more || len(recs) != 1 || recs[0].Name != "a" || string(recs[0].Value) != "2" {
			t.Fatalf("list over gRPC = %+v, %v, %v", recs, more, err)
		}
		r, err = via.Read(ctx, p, "a", level.Lazy)
		if err != nil || (string(r.Value) != "1" && string(r.Value) != "2") {
			t.Fatalf("lazy read = %+v, %v", r, err)
		}
	}
}

// A replica cut off while large values are written catches up in batches
// that each fit a gRPC message, and then a read at all succeeds.
func TestLargeValuesCatchUp(t *testing.T) {
	hosts := startClusterWith(t, 3, false, 5*time.Second)
	ctx := ctxFor(t, 60*time.Second)
	if _, err := hosts[0].svc.Write(ctx, "big", set("x", "start"), level.All); err != nil {
		t.Fatal(err)
	}
	res, follower, value := writeWithoutFollower(t, hosts)
	// A fetch of the whole log is cut short to keep the message small.
	txs, err := NewTransport(wire.NewPool(insecure.NewCredentials())).Fetch(ctx, res.Replicas[0].Addr, "big", 1, 256)
	if err != nil || len(txs) == 0 || len(txs) >= 12 {
		t.Fatalf("fetch of 12 large entries returned %d, %v", len(txs), err)
	}
	catchUp(t, hosts, follower, value)
}

// writeWithoutFollower writes twelve 900 KiB values to partition "big"
// while one of its followers is cut off, and returns the partition's
// placement, that follower and the last value.
func writeWithoutFollower(t *testing.T, hosts []*host) (ring.Result, *host, []byte) {
	t.Helper()
	ctx := ctxFor(t, 60*time.Second)
	res, err := hosts[0].ring.Lookup(ctx, ring.HashKey([]byte("big")), 3)
	if err != nil {
		t.Fatal(err)
	}
	var follower *host
	for _, h := range hosts {
		if h.addr == res.Replicas[2].Addr {
			follower = h
		}
	}
	// Cut the follower off: stop its server (the process lives on).
	follower.srv.Stop()
	value := make([]byte, 900<<10)
	for i := range 12 {
		value[0] = byte(i)
		if _, err := hosts[0].svc.Write(ctx, "big", set(fmt.Sprintf("v%d", i), string(value)), level.Quorum); err != nil {
			t.Fatalf("write %d with a replica down: %v", i, err)
		}
	}
	return res, follower, value
}

// catchUp brings the follower back and reads the last value at all, then
// from the follower's own copy.
func catchUp(t *testing.T, hosts []*host, follower *host, value []byte) {
	t.Helper()
	ctx := ctxFor(t, 60*time.Second)
	ln, err := net.Listen("tcp", follower.addr)
	if err != nil {
		t.Fatal(err)
	}
	follower.serve(t, ln)
	waitSettled(t, hosts)
	for {
		r, err := hosts[1].svc.Read(ctx, "big", "v11", level.All)
		if err == nil {
			if r.Value[0] != 11 || len(r.Value) != len(value) {
				t.Fatalf("read v11 = %d bytes starting %d", len(r.Value), r.Value[0])
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("read at all after the replica came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	rec, err := follower.svc.HandleReadLocal("big", "v11")
	if err != nil || len(rec.Value) != len(value) {
		t.Fatalf("the follower's own copy: %d bytes, %v", len(rec.Value), err)
	}
}

// A follower that missed entries the others then compacted installs the
// leader's snapshot, in pages (the values fill several), over gRPC.
func TestSnapshotCatchUp(t *testing.T) {
	hosts := startClusterWith(t, 3, false, 5*time.Second)
	ctx := ctxFor(t, 60*time.Second)
	if _, err := hosts[0].svc.Write(ctx, "big", set("x", "start"), level.All); err != nil {
		t.Fatal(err)
	}
	res, follower, value := writeWithoutFollower(t, hosts)
	for _, h := range hosts {
		if h == follower {
			continue
		}
		if st, err := h.svc.Compact(ctx, txlog.Retention{Keep: 1}); err != nil || st.Compacted != 1 {
			t.Fatalf("compact %s: %+v, %v", h.addr, st, err)
		}
	}
	if _, err := NewTransport(wire.NewPool(insecure.NewCredentials())).Fetch(ctx, res.Replicas[0].Addr, "big", 1, 256); !errors.Is(err, txlog.ErrCompacted) {
		t.Fatalf("fetch of compacted entries: %v, want ErrCompacted", err)
	}
	pg, err := NewTransport(wire.NewPool(insecure.NewCredentials())).Snapshot(ctx, res.Replicas[0].Addr, "big", 0, "")
	if err != nil || !pg.More || len(pg.Records) < 2 || pg.Height == 0 || len(pg.Config) != 3 {
		t.Fatalf("first snapshot page: height %d, %d records, more %v, config %v: %v", pg.Height, len(pg.Records), pg.More, pg.Config, err)
	}
	catchUp(t, hosts, follower, value)
	var base uint64
	if err := follower.svc.Partitions(func(h txlog.Held) error {
		if h.Name == "big" {
			base = h.Base
		}
		return nil
	}); err != nil || base < pg.Height {
		t.Fatalf("the follower's base is %d (%v), want the snapshot's height %d or more", base, err, pg.Height)
	}
	for i := range 11 {
		rec, err := follower.svc.HandleReadLocal("big", fmt.Sprintf("v%d", i))
		if err != nil || len(rec.Value) != len(value) || rec.Value[0] != byte(i) {
			t.Fatalf("the follower's copy of v%d: %d bytes, %v", i, len(rec.Value), err)
		}
	}
}

// Well-formed messages with bad fields get InvalidArgument, and the
// server keeps serving.
func TestBadFields(t *testing.T) {
	hosts := startCluster(t, 1, false)
	cc, err := grpc.NewClient(hosts[0].addr, wire.DialOptions(insecure.NewCredentials())...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := fb.NewTxLogClient(cc)
	ctx := ctxFor(t, 10*time.Second)

	b := flatbuffers.NewBuilder(64)
	fb.PrepareRequestStart(b)
	b.Finish(fb.PrepareRequestEnd(b))
	if _, err := c.Prepare(ctx, b); status.Code(err) != codes.InvalidArgument {
		t.Errorf("prepare without a partition: %v", err)
	}

	b = flatbuffers.NewBuilder(64)
	p, name, bad := b.CreateString("p"), b.CreateString("a"), b.CreateByteVector([]byte{1, 2, 3})
	fb.ChangeStart(b)
	fb.ChangeAddName(b, name)
	fb.ChangeAddIfMatch(b, bad)
	ch := fb.ChangeEnd(b)
	changes := wire.TableVector(b, []flatbuffers.UOffsetT{ch})
	fb.TxRequestStart(b)
	fb.TxRequestAddPartition(b, p)
	fb.TxRequestAddKind(b, fb.TxKindWrite)
	fb.TxRequestAddChanges(b, changes)
	b.Finish(fb.TxRequestEnd(b))
	if _, err := c.Forward(ctx, b); status.Code(err) != codes.InvalidArgument {
		t.Errorf("if_match of 3 bytes: %v", err)
	}

	b = flatbuffers.NewBuilder(64)
	p = b.CreateString("p")
	junk := b.CreateByteVector([]byte("not a transaction"))
	fb.TxEntryStart(b)
	fb.TxEntryAddData(b, junk)
	txs := wire.TableVector(b, []flatbuffers.UOffsetT{fb.TxEntryEnd(b)})
	fb.AppendRequestStart(b)
	fb.AppendRequestAddPartition(b, p)
	fb.AppendRequestAddTxs(b, txs)
	b.Finish(fb.AppendRequestEnd(b))
	if _, err := c.Append(ctx, b); status.Code(err) != codes.InvalidArgument {
		t.Errorf("append of a malformed transaction: %v", err)
	}

	b = flatbuffers.NewBuilder(64)
	p = b.CreateString("p")
	fb.TxRequestStart(b)
	fb.TxRequestAddPartition(b, p)
	fb.TxRequestAddLevel(b, 7)
	b.Finish(fb.TxRequestEnd(b))
	if _, err := c.Forward(ctx, b); status.Code(err) != codes.InvalidArgument {
		t.Errorf("unknown level: %v", err)
	}
	if _, err := hosts[0].svc.Write(ctx, "p", set("a", "1"), level.Quorum); err != nil {
		t.Fatalf("the server stopped serving: %v", err)
	}
}

// The wire's enums number levels and kinds as package txlog does.
func TestEnumsMatch(t *testing.T) {
	for l, want := range map[level.Level]fb.Level{level.Quorum: fb.LevelQuorum, level.All: fb.LevelAll, level.Leader: fb.LevelLeader, level.Lazy: fb.LevelLazy} {
		if fb.Level(l) != want {
			t.Errorf("level %s is %d on the wire, want %d", l, l, want)
		}
	}
	for k, want := range map[txlog.Kind]fb.TxKind{txlog.KindRead: fb.TxKindRead, txlog.KindWrite: fb.TxKindWrite, txlog.KindHistory: fb.TxKindHistory, txlog.KindList: fb.TxKindList} {
		if fb.TxKind(k) != want {
			t.Errorf("kind %d is %d on the wire", k, want)
		}
	}
}

func TestRequestRoundTrip(t *testing.T) {
	h := txlog.Hash{1, 2, 3}
	var zero txlog.Hash
	for _, req := range []txlog.Request{
		{Partition: "p", Level: level.Lazy, Kind: txlog.KindRead, Name: "a"},
		{Partition: "p", Kind: txlog.KindHistory, Name: ""},
		{Partition: "p", Kind: txlog.KindList, Name: "d/", After: "d/b", Limit: 7},
		{Partition: "p", Level: level.All, Kind: txlog.KindWrite, IfEmpty: "d/", ID: txlog.NewWriteID(), Write: []txlog.Change{
			{Name: "a", Value: []byte("v"), IfMatch: &h}, {Name: "b", Delete: true, IfMatch: &zero}, {Name: "c", Value: []byte{}},
			{Name: "x", Check: true, IfMatch: &zero},
		}},
	} {
		b := EncodeRequest(req)
		var t2 fb.TxRequest
		if err := wire.Decode(b.FinishedBytes(), &t2); err != nil {
			t.Fatal(err)
		}
		got, err := DecodeRequest(&t2)
		if err != nil || fmt.Sprintf("%+v", deref(got)) != fmt.Sprintf("%+v", deref(req)) {
			t.Errorf("round trip of %+v = %+v, %v", deref(req), deref(got), err)
		}
	}
}

func TestRequestBadWriteID(t *testing.T) {
	b := flatbuffers.NewBuilder(64)
	p, id := b.CreateString("p"), b.CreateByteVector([]byte{1, 2, 3})
	fb.TxRequestStart(b)
	fb.TxRequestAddPartition(b, p)
	fb.TxRequestAddKind(b, fb.TxKindWrite)
	fb.TxRequestAddId(b, id)
	b.Finish(fb.TxRequestEnd(b))
	var r fb.TxRequest
	if err := wire.Decode(b.FinishedBytes(), &r); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeRequest(&r); !errors.Is(err, txlog.ErrBadRequest) {
		t.Fatalf("a 3-byte write ID: %v, want a bad request", err)
	}
}

// deref replaces IfMatch pointers by their values for comparison.
func deref(r txlog.Request) any {
	type change struct {
		txlog.Change
		Match string
	}
	out := []any{r.Partition, r.Level, r.Kind, r.Name, r.After, r.Limit, r.IfEmpty, r.ID}
	for _, c := range r.Write {
		m := "none"
		if c.IfMatch != nil {
			m = c.IfMatch.String()
		}
		c.IfMatch = nil
		out = append(out, change{c, m})
	}
	return out
}
