// Package gcrpc carries garbage collection's calls over gRPC: Transport
// asks hosts to sweep and a node to run a cycle, Register serves a Handler
// as the GC service. A malformed request is InvalidArgument.
package gcrpc

import (
	"context"
	"fmt"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/gc"
	"github.com/difuse/difuse/nodestatus"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

// Handler serves the GC service; *gc.Collector implements it.
type Handler interface {
	HandleSweep(ctx context.Context, req gc.SweepRequest) (blockstore.SweepStats, error)
	Collect(ctx context.Context, dryRun bool) (nodestatus.GCReport, error)
}

// Register serves h as the GC service on s.
func Register(s grpc.ServiceRegistrar, h Handler) { fb.RegisterGCServer(s, server{h: h}) }

type server struct {
	fb.UnimplementedGCServer
	h Handler
}

func (s server) Sweep(ctx context.Context, r *fb.GCSweepRequest) (*flatbuffers.Builder, error) {
	keep := &gc.Bloom{Bits: r.BitsBytes(), K: int(r.K())}
	if err := keep.Check(); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	st, err := s.h.HandleSweep(ctx, gc.SweepRequest{Keep: keep, Age: time.Duration(r.AgeNanos()), DryRun: r.DryRun()})
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	b := flatbuffers.NewBuilder(64)
	fb.GCSweepReplyStart(b)
	fb.GCSweepReplyAddExamined(b, st.Examined)
	fb.GCSweepReplyAddFreed(b, st.Freed)
	fb.GCSweepReplyAddFreedBytes(b, st.FreedBytes)
	fb.GCSweepReplyAddRecent(b, st.Recent)
	fb.GCSweepReplyAddRecentBytes(b, st.RecentBytes)
	b.Finish(fb.GCSweepReplyEnd(b))
	return b, nil
}

func (s server) Collect(ctx context.Context, r *fb.GCCollectRequest) (*flatbuffers.Builder, error) {
	rep, err := s.h.Collect(ctx, r.DryRun())
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	b := flatbuffers.NewBuilder(256)
	b.Finish(nodestatus.EncodeGCReport(b, rep))
	return b, nil
}

// Transport calls other hosts' GC services on connections from a pool.
type Transport struct{ pool *wire.Pool }

// NewTransport returns a transport calling through pool; the pool's owner
// closes it.
func NewTransport(pool *wire.Pool) *Transport { return &Transport{pool: pool} }

var _ gc.Sweepers = (*Transport)(nil)

// Sweep asks the host at to to sweep its blocks.
func (t *Transport) Sweep(ctx context.Context, to string, req gc.SweepRequest) (blockstore.SweepStats, error) {
	cc, err := t.pool.Get(to)
	if err != nil {
		return blockstore.SweepStats{}, fmt.Errorf("gc: %s: %w", to, err)
	}
	b := flatbuffers.NewBuilder(64 + len(req.Keep.Bits))
	bits := b.CreateByteVector(req.Keep.Bits)
	fb.GCSweepRequestStart(b)
	fb.GCSweepRequestAddBits(b, bits)
	fb.GCSweepRequestAddK(b, uint32(req.Keep.K))
	fb.GCSweepRequestAddAgeNanos(b, int64(req.Age))
	fb.GCSweepRequestAddDryRun(b, req.DryRun)
	b.Finish(fb.GCSweepRequestEnd(b))
	r, err := fb.NewGCClient(cc).Sweep(ctx, b)
	if err != nil {
		return blockstore.SweepStats{}, fmt.Errorf("gc: sweep %s: %w", to, err)
	}
	return blockstore.SweepStats{Examined: r.Examined(), Freed: r.Freed(), FreedBytes: r.FreedBytes(), Recent: r.Recent(), RecentBytes: r.RecentBytes()}, nil
}
