package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/txlog"
	"github.com/difuse/difuse/txlog/txlogrpc"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

// A request goes first to the node whose vnode follows its key on the
// ring, unless that node failed lately.
func TestLeader(t *testing.T) {
	c := &Cluster{creds: insecure.NewCredentials(), done: make(chan struct{})}
	defer c.Close()
	for _, a := range []string{"127.0.0.1:1", "127.0.0.1:2"} {
		if err := c.add(a); err != nil {
			t.Fatal(err)
		}
	}
	id := func(b byte) ring.ID { var x ring.ID; x[0] = b; return x }
	c.ring.Update([]ring.Ref{{ID: id(10), Addr: "127.0.0.1:1"}, {ID: id(20), Addr: "127.0.0.1:2"}, {ID: id(30), Addr: "127.0.0.1:1"}})
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

// fakeClient answers every Txn with err, after noting the write IDs it
// was sent.
type fakeClient struct {
	fb.UnimplementedClientServer
	err error
	ids chan<- []byte
}

func (f fakeClient) Txn(_ context.Context, r *fb.TxRequest) (*flatbuffers.Builder, error) {
	f.ids <- slices.Clone(r.IdBytes())
	return nil, f.err
}

// serveFake serves a fakeClient on loopback and returns its address.
func serveFake(t *testing.T, err error, ids chan<- []byte) string {
	t.Helper()
	ln, lerr := net.Listen("tcp", "127.0.0.1:0")
	if lerr != nil {
		t.Fatal(lerr)
	}
	srv := grpc.NewServer(wire.ServerOptions(slog.New(slog.DiscardHandler))...)
	fb.RegisterClientServer(srv, fakeClient{err: err, ids: ids})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// A write tried on one node, whose reply was lost, then on another carries
// the same ID to both, so that the second finds the first's transaction
// instead of applying it again.
func TestRetriedWriteKeepsItsID(t *testing.T) {
	ids := make(chan []byte, 2)
	lost := serveFake(t, status.Error(codes.Unavailable, "the node died after the commit"), ids)
	conflict := serveFake(t, txlogrpc.ToStatus(fmt.Errorf("x: %w", txlog.ErrConflict)), ids)
	c := &Cluster{creds: insecure.NewCredentials(), done: make(chan struct{})}
	defer c.Close()
	for _, a := range []string{lost, conflict} {
		if err := c.add(a); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	write := txlog.Request{Partition: "p", Kind: txlog.KindWrite, Write: []txlog.Change{{Name: "r", Value: []byte("v")}}}
	if _, err := c.Do(ctx, write); !errors.Is(err, txlog.ErrConflict) {
		t.Fatalf("%v, want the second node's conflict", err)
	}
	first, second := <-ids, <-ids
	if len(first) != len(txlog.WriteID{}) || !bytes.Equal(first, second) {
		t.Fatalf("write IDs %x then %x, want one 16-byte ID", first, second)
	}
}
