// Package ringrpc carries the ring's calls over gRPC: Transport is the
// client side of ring.Transport and Register serves a ring.Handler as the
// Ring service. Messages are FlatBuffers verified by package wire; ids are
// checked to be 32 bytes before use. Errors keep their meaning across the
// network: ring.ErrNoVNode and ring.ErrNotMember come back as themselves,
// and any failure to reach a host wraps ring.ErrUnreachable.
package ringrpc

import (
	"context"
	"errors"
	"fmt"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

// Transport is ring.Transport over gRPC, on connections from a shared
// pool.
type Transport struct {
	pool *wire.Pool
}

// NewTransport returns a transport calling through pool; the pool's owner
// closes it.
func NewTransport(pool *wire.Pool) *Transport { return &Transport{pool: pool} }

var _ ring.Transport = (*Transport)(nil)

// client returns the Ring client for addr.
func (t *Transport) client(addr string) (fb.RingClient, error) {
	cc, err := t.pool.Get(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ring.ErrUnreachable, addr, err)
	}
	return fb.NewRingClient(cc), nil
}

// fromStatus turns a gRPC error back into the ring's errors.
func fromStatus(addr string, err error) error {
	switch status.Code(err) {
	case codes.NotFound:
		return fmt.Errorf("%s: %w", addr, ring.ErrNoVNode)
	case codes.FailedPrecondition:
		return fmt.Errorf("%s: %w", addr, ring.ErrNotMember)
	}
	return fmt.Errorf("%w: %s: %w", ring.ErrUnreachable, addr, err)
}

// toStatus turns a handler's error into a gRPC status.
func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ring.ErrNoVNode):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ring.ErrNotMember):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, errBadRequest):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

var errBadRequest = errors.New("bad request")

// VNodes returns the vnodes the host at addr runs.
func (t *Transport) VNodes(ctx context.Context, addr string) ([]ring.Ref, error) {
	c, err := t.client(addr)
	if err != nil {
		return nil, err
	}
	b := flatbuffers.NewBuilder(16)
	fb.VNodesRequestStart(b)
	b.Finish(fb.VNodesRequestEnd(b))
	r, err := c.VNodes(ctx, b)
	if err != nil {
		return nil, fromStatus(addr, err)
	}
	return DecodeRefs(r.VnodesLength(), r.Vnodes)
}

// Ping succeeds if the vnode is alive.
func (t *Transport) Ping(ctx context.Context, to ring.Ref) error {
	c, err := t.client(to.Addr)
	if err != nil {
		return err
	}
	if _, err := c.Ping(ctx, vnodeRequest(to.ID)); err != nil {
		return fromStatus(to.Addr, err)
	}
	return nil
}

// GetState returns the vnode's predecessor and successor list.
func (t *Transport) GetState(ctx context.Context, to ring.Ref) (ring.State, error) {
	c, err := t.client(to.Addr)
	if err != nil {
		return ring.State{}, err
	}
	r, err := c.GetState(ctx, vnodeRequest(to.ID))
	if err != nil {
		return ring.State{}, fromStatus(to.Addr, err)
	}
	var st ring.State
	if st.Pred, err = DecodeOptRef(r.Pred(nil)); err != nil {
		return ring.State{}, err
	}
	if st.Succs, err = DecodeRefs(r.SuccsLength(), r.Succs); err != nil {
		return ring.State{}, err
	}
	return st, nil
}

// Rectify tells the vnode that from may be its predecessor.
func (t *Transport) Rectify(ctx context.Context, to ring.Ref, from ring.Ref) error {
	c, err := t.client(to.Addr)
	if err != nil {
		return err
	}
	b := flatbuffers.NewBuilder(128)
	target := b.CreateByteVector(to.ID[:])
	f := EncodeRef(b, from)
	fb.RectifyRequestStart(b)
	fb.RectifyRequestAddTarget(b, target)
	fb.RectifyRequestAddFrom(b, f)
	b.Finish(fb.RectifyRequestEnd(b))
	if _, err := c.Rectify(ctx, b); err != nil {
		return fromStatus(to.Addr, err)
	}
	return nil
}

// Next asks the vnode for one hop of a lookup of key.
func (t *Transport) Next(ctx context.Context, to ring.Ref, key ring.ID) (ring.NextReply, error) {
	c, err := t.client(to.Addr)
	if err != nil {
		return ring.NextReply{}, err
	}
	b := flatbuffers.NewBuilder(128)
	target, k := b.CreateByteVector(to.ID[:]), b.CreateByteVector(key[:])
	fb.NextRequestStart(b)
	fb.NextRequestAddTarget(b, target)
	fb.NextRequestAddKey(b, k)
	b.Finish(fb.NextRequestEnd(b))
	r, err := c.Next(ctx, b)
	if err != nil {
		return ring.NextReply{}, fromStatus(to.Addr, err)
	}
	reply := ring.NextReply{Found: r.Found()}
	if reply.Succs, err = DecodeRefs(r.SuccsLength(), r.Succs); err != nil {
		return ring.NextReply{}, err
	}
	if reply.Candidates, err = DecodeRefs(r.CandidatesLength(), r.Candidates); err != nil {
		return ring.NextReply{}, err
	}
	return reply, nil
}

// Leaving tells a neighbour that a vnode leaves the ring.
func (t *Transport) Leaving(ctx context.Context, to ring.Ref, note ring.LeaveNote) error {
	c, err := t.client(to.Addr)
	if err != nil {
		return err
	}
	b := flatbuffers.NewBuilder(512)
	target := b.CreateByteVector(to.ID[:])
	leaving := EncodeRef(b, note.Leaving)
	var pred flatbuffers.UOffsetT
	if !note.Pred.IsZero() {
		pred = EncodeRef(b, note.Pred)
	}
	succs := EncodeRefs(b, note.Succs)
	fb.LeavingRequestStart(b)
	fb.LeavingRequestAddTarget(b, target)
	fb.LeavingRequestAddLeaving(b, leaving)
	if pred != 0 {
		fb.LeavingRequestAddPred(b, pred)
	}
	fb.LeavingRequestAddSuccs(b, succs)
	b.Finish(fb.LeavingRequestEnd(b))
	if _, err := c.Leaving(ctx, b); err != nil {
		return fromStatus(to.Addr, err)
	}
	return nil
}

func vnodeRequest(id ring.ID) *flatbuffers.Builder {
	b := flatbuffers.NewBuilder(64)
	target := b.CreateByteVector(id[:])
	fb.VNodeRequestStart(b)
	fb.VNodeRequestAddTarget(b, target)
	b.Finish(fb.VNodeRequestEnd(b))
	return b
}

// EncodeRef adds a VNodeRef to b and returns its offset.
func EncodeRef(b *flatbuffers.Builder, r ring.Ref) flatbuffers.UOffsetT {
	id, addr := b.CreateByteVector(r.ID[:]), b.CreateString(r.Addr)
	fb.VNodeRefStart(b)
	fb.VNodeRefAddId(b, id)
	fb.VNodeRefAddAddr(b, addr)
	return fb.VNodeRefEnd(b)
}

// EncodeRefs adds a vector of VNodeRefs to b and returns its offset.
func EncodeRefs(b *flatbuffers.Builder, refs []ring.Ref) flatbuffers.UOffsetT {
	offs := make([]flatbuffers.UOffsetT, len(refs))
	for i, r := range refs {
		offs[i] = EncodeRef(b, r)
	}
	return wire.TableVector(b, offs)
}

// DecodeRef reads a verified VNodeRef, checking the id's length and that
// the address is not empty.
func DecodeRef(t *fb.VNodeRef) (ring.Ref, error) {
	id, err := ring.IDFromBytes(t.IdBytes())
	if err != nil {
		return ring.Ref{}, fmt.Errorf("%w: vnode ref: %w", errBadRequest, err)
	}
	if len(t.Addr()) == 0 {
		return ring.Ref{}, fmt.Errorf("%w: vnode ref %s without an address", errBadRequest, id.Short())
	}
	return ring.Ref{ID: id, Addr: string(t.Addr())}, nil
}

// DecodeOptRef reads a VNodeRef that may be absent (nil gives the zero Ref).
func DecodeOptRef(t *fb.VNodeRef) (ring.Ref, error) {
	if t == nil {
		return ring.Ref{}, nil
	}
	return DecodeRef(t)
}

// DecodeRefs reads a vector of n VNodeRefs through its generated accessor;
// more than ring.MaxRefs are refused.
func DecodeRefs(n int, at func(*fb.VNodeRef, int) bool) ([]ring.Ref, error) {
	if n > ring.MaxRefs {
		return nil, fmt.Errorf("%w: %d vnode refs (at most %d)", errBadRequest, n, ring.MaxRefs)
	}
	refs := make([]ring.Ref, 0, n)
	var t fb.VNodeRef
	for i := range n {
		if !at(&t, i) {
			return nil, fmt.Errorf("%w: vnode ref %d missing", errBadRequest, i)
		}
		r, err := DecodeRef(&t)
		if err != nil {
			return nil, err
		}
		refs = append(refs, r)
	}
	return refs, nil
}
