package gcrpc

import (
	"context"
	"net"
	"testing"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/client"
	"github.com/difuse/difuse/gc"
	"github.com/difuse/difuse/nodestatus"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

// fake records the sweep it was asked for and reports a fixed cycle.
type fake struct{ got gc.SweepRequest }

func (f *fake) HandleSweep(_ context.Context, req gc.SweepRequest) (blockstore.SweepStats, error) {
	f.got = req
	return blockstore.SweepStats{Examined: 10, Freed: 3, FreedBytes: 300, Recent: 2, RecentBytes: 200}, nil
}

func (f *fake) Collect(_ context.Context, dryRun bool) (nodestatus.GCReport, error) {
	return nodestatus.GCReport{Start: time.Unix(100, 0), End: time.Unix(101, 0), DryRun: dryRun, Partitions: 2, Inodes: 5,
		Referenced: 7, Hosts: 3, Examined: 30, Freed: 4, FreedBytes: 400, Recent: 6, RecentBytes: 600, Failed: []string{"h2: gone"}}, nil
}

// Sweeps and cycles travel intact; a malformed filter is refused and the
// server goes on serving.
func TestRoundTrip(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(wire.ServerOptions(nil)...)
	f := &fake{}
	Register(srv, f)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	pool := wire.NewPool(insecure.NewCredentials())
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := ln.Addr().String()

	keep := gc.NewBloom(100, 0.01)
	keep.Add(blockstore.Sum([]byte("x")))
	st, err := NewTransport(pool).Sweep(ctx, addr, gc.SweepRequest{Keep: keep, Age: 42 * time.Hour, DryRun: true})
	if err != nil || st.Freed != 3 || st.FreedBytes != 300 || st.Examined != 10 || st.Recent != 2 || st.RecentBytes != 200 {
		t.Fatalf("sweep: %+v, %v", st, err)
	}
	if !f.got.DryRun || f.got.Age != 42*time.Hour || !f.got.Keep.Contains(blockstore.Sum([]byte("x"))) || f.got.Keep.K != keep.K {
		t.Fatalf("the handler got %+v", f.got)
	}

	cc, err := pool.Get(addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := client.Dial(addr, insecure.NewCredentials())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rep, err := conn.Collect(ctx, true)
	if err != nil || !rep.DryRun || rep.Freed != 4 || rep.Recent != 6 || rep.RecentBytes != 600 || rep.Hosts != 3 || len(rep.Failed) != 1 || !rep.End.Equal(time.Unix(101, 0)) {
		t.Fatalf("collect: %+v, %v", rep, err)
	}

	b := flatbuffers.NewBuilder(64)
	bits := b.CreateByteVector(make([]byte, 7))
	fb.GCSweepRequestStart(b)
	fb.GCSweepRequestAddBits(b, bits)
	fb.GCSweepRequestAddK(b, 3)
	b.Finish(fb.GCSweepRequestEnd(b))
	if _, err := fb.NewGCClient(cc).Sweep(ctx, b); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a malformed filter: %v, want InvalidArgument", err)
	}
	if _, err := conn.Collect(ctx, false); err != nil {
		t.Fatalf("after a malformed request: %v", err)
	}
}
