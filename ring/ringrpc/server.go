package ringrpc

import (
	"context"
	"fmt"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/wire/fb"
)

// Register serves h as the Ring service on s.
func Register(s grpc.ServiceRegistrar, h ring.Handler) {
	fb.RegisterRingServer(s, server{h: h})
}

type server struct {
	fb.UnimplementedRingServer
	h ring.Handler
}

// checkOwn refuses a vnode offered as a predecessor unless it is a vnode
// of the caller: its id derives from its address (ring.Genuine), and that
// is the address the caller's certificate was issued to.
func checkOwn(ctx context.Context, from ring.Ref) error {
	if !ring.Genuine(from) {
		return status.Errorf(codes.InvalidArgument, "ring: %s is not a vnode id of %s", from.ID, from.Addr)
	}
	if cert, ok := identity.PeerCert(ctx); ok && cert.Subject.CommonName != from.Addr {
		return status.Errorf(codes.PermissionDenied, "ring: %s may offer only its own vnodes, not %s's", cert.Subject.CommonName, from.Addr)
	}
	return nil
}

func ack() *flatbuffers.Builder {
	b := flatbuffers.NewBuilder(16)
	fb.AckStart(b)
	b.Finish(fb.AckEnd(b))
	return b
}

func target(b []byte) (ring.ID, error) {
	id, err := ring.IDFromBytes(b)
	if err != nil {
		return id, toStatus(fmt.Errorf("%w: target: %w", errBadRequest, err))
	}
	return id, nil
}

// requiredRef decodes a VNodeRef field that must be present.
func requiredRef(what string, t *fb.VNodeRef) (ring.Ref, error) {
	if t == nil {
		return ring.Ref{}, toStatus(fmt.Errorf("%w: %s missing", errBadRequest, what))
	}
	r, err := DecodeRef(t)
	if err != nil {
		return ring.Ref{}, toStatus(err)
	}
	return r, nil
}

func (s server) VNodes(context.Context, *fb.VNodesRequest) (*flatbuffers.Builder, error) {
	refs, err := s.h.HandleVNodes()
	if err != nil {
		return nil, toStatus(err)
	}
	b := flatbuffers.NewBuilder(64 * len(refs))
	v := EncodeRefs(b, refs)
	fb.VNodesReplyStart(b)
	fb.VNodesReplyAddVnodes(b, v)
	b.Finish(fb.VNodesReplyEnd(b))
	return b, nil
}

func (s server) Ping(_ context.Context, r *fb.VNodeRequest) (*flatbuffers.Builder, error) {
	id, err := target(r.TargetBytes())
	if err != nil {
		return nil, err
	}
	if err := s.h.HandlePing(id); err != nil {
		return nil, toStatus(err)
	}
	return ack(), nil
}

func (s server) GetState(_ context.Context, r *fb.VNodeRequest) (*flatbuffers.Builder, error) {
	id, err := target(r.TargetBytes())
	if err != nil {
		return nil, err
	}
	st, err := s.h.HandleGetState(id)
	if err != nil {
		return nil, toStatus(err)
	}
	b := flatbuffers.NewBuilder(64 * (len(st.Succs) + 1))
	var pred flatbuffers.UOffsetT
	if !st.Pred.IsZero() {
		pred = EncodeRef(b, st.Pred)
	}
	succs := EncodeRefs(b, st.Succs)
	fb.StateReplyStart(b)
	if pred != 0 {
		fb.StateReplyAddPred(b, pred)
	}
	fb.StateReplyAddSuccs(b, succs)
	b.Finish(fb.StateReplyEnd(b))
	return b, nil
}

func (s server) Rectify(ctx context.Context, r *fb.RectifyRequest) (*flatbuffers.Builder, error) {
	id, err := target(r.TargetBytes())
	if err != nil {
		return nil, err
	}
	from, err := requiredRef("from", r.From(nil))
	if err != nil {
		return nil, err
	}
	if err := checkOwn(ctx, from); err != nil {
		return nil, err
	}
	if err := s.h.HandleRectify(ctx, id, from); err != nil {
		return nil, toStatus(err)
	}
	return ack(), nil
}

func (s server) Next(_ context.Context, r *fb.NextRequest) (*flatbuffers.Builder, error) {
	id, err := target(r.TargetBytes())
	if err != nil {
		return nil, err
	}
	key, err := ring.IDFromBytes(r.KeyBytes())
	if err != nil {
		return nil, toStatus(fmt.Errorf("%w: key: %w", errBadRequest, err))
	}
	reply, err := s.h.HandleNext(id, key)
	if err != nil {
		return nil, toStatus(err)
	}
	b := flatbuffers.NewBuilder(64 * (len(reply.Succs) + len(reply.Candidates)))
	succs, cands := EncodeRefs(b, reply.Succs), EncodeRefs(b, reply.Candidates)
	fb.NextReplyStart(b)
	fb.NextReplyAddFound(b, reply.Found)
	fb.NextReplyAddSuccs(b, succs)
	fb.NextReplyAddCandidates(b, cands)
	b.Finish(fb.NextReplyEnd(b))
	return b, nil
}

func (s server) Leaving(ctx context.Context, r *fb.LeavingRequest) (*flatbuffers.Builder, error) {
	id, err := target(r.TargetBytes())
	if err != nil {
		return nil, err
	}
	var note ring.LeaveNote
	if note.Leaving, err = requiredRef("leaving", r.Leaving(nil)); err != nil {
		return nil, err
	}
	if note.Pred, err = DecodeOptRef(r.Pred(nil)); err != nil {
		return nil, toStatus(err)
	}
	if note.Succs, err = DecodeRefs(r.SuccsLength(), r.Succs); err != nil {
		return nil, toStatus(err)
	}
	if err := s.h.HandleLeaving(ctx, id, note); err != nil {
		return nil, toStatus(err)
	}
	return ack(), nil
}
