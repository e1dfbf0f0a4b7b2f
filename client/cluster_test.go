package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/txlog"
	"github.com/difuse/difuse/txlog/txlogrpc"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

func TestCapacity(t *testing.T) {
	node := func(stored, lsm, free int64) Status {
		return Status{Replicas: 3, Blocks: blockstore.Stats{StoredBytes: stored}, Store: StoreStats{LSMBytes: lsm, FreeBytes: free}}
	}
	used, free := Capacity([]Status{node(300, 30, 3000), node(300, 30, 3000), node(300, 30, 3000)})
	if used != 330 || free != 3000 {
		t.Errorf("3 nodes, 3 copies: used %d, free %d; want 330 and 3000", used, free)
	}
	// One node alone keeps one copy, whatever N is.
	if used, free := Capacity([]Status{node(100, 0, 500)}); used != 100 || free != 500 {
		t.Errorf("one node: used %d, free %d", used, free)
	}
}

// A request goes first to the node whose vnode follows its key on the
// ring, unless that node failed lately.
func TestLeader(t *testing.T) {
	c := &Cluster{done: make(chan struct{})}
	defer c.Close()
	for _, a := range []string{"127.0.0.1:1", "127.0.0.1:2"} {
		if err := c.add(a); err != nil {
			t.Fatal(err)
		}
	}
	id := func(b byte) ring.ID { var x ring.ID; x[0] = b; return x }
	c.vnodes = []ring.Ref{{ID: id(10), Addr: "127.0.0.1:1"}, {ID: id(20), Addr: "127.0.0.1:2"}, {ID: id(30), Addr: "127.0.0.1:1"}}
	for _, tc := range []struct {
		key  byte
		want int
	}{{5, 0}, {10, 0}, {11, 1}, {20, 1}, {25, 0}, {31, 0}} {
		if got := c.leader(id(tc.key)); got != tc.want {
			t.Errorf("leader of %d = %d, want %d", tc.key, got, tc.want)
		}
	}
	c.conns[1].failedAt.Store(time.Now().UnixNano())
	if got := c.leader(id(15)); got != -1 {
		t.Errorf("a node that failed lately is still preferred: %d", got)
	}
}

// fakeClient answers every Txn with err.
type fakeClient struct {
	fb.UnimplementedClientServer
	err error
}

func (f fakeClient) Txn(context.Context, *fb.TxRequest) (*flatbuffers.Builder, error) {
	return nil, f.err
}

// serveFake serves a fakeClient on loopback and returns its address.
func serveFake(t *testing.T, err error) string {
	t.Helper()
	ln, lerr := net.Listen("tcp", "127.0.0.1:0")
	if lerr != nil {
		t.Fatal(lerr)
	}
	srv := grpc.NewServer(wire.ServerOptions(slog.New(slog.DiscardHandler))...)
	fb.RegisterClientServer(srv, fakeClient{err: err})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// A write that failed on one node in a way that may have left it applied,
// then conflicted on the next, has an unknown outcome: the conflict may be
// with itself.
func TestRetriedWriteOutcome(t *testing.T) {
	lost := serveFake(t, status.Error(codes.Unavailable, "the node died after the commit"))
	conflict := serveFake(t, txlogrpc.ToStatus(fmt.Errorf("x: %w", txlog.ErrConflict)))
	write := txlog.Request{Partition: "p", Kind: txlog.KindWrite, Write: []txlog.Change{{Name: "r", Value: []byte("v")}}}
	for _, tc := range []struct {
		name  string
		addrs []string
		want  error
	}{
		{"conflict after a lost reply", []string{lost, conflict}, txlog.ErrUnavailable},
		{"plain conflict", []string{conflict}, txlog.ErrConflict},
	} {
		c := &Cluster{done: make(chan struct{})}
		for _, a := range tc.addrs {
			if err := c.add(a); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Do(ctx, write)
		cancel()
		c.Close()
		if !errors.Is(err, tc.want) || (tc.want == txlog.ErrUnavailable && errors.Is(err, txlog.ErrConflict)) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
