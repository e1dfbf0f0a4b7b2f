// Package healrpc carries healing's calls over gRPC: Transport is the
// client side of heal.Peers, Register serves a
// Handler as the Heal service. A malformed request is InvalidArgument;
// any other failure is a transport error.
package healrpc

import (
	"context"
	"errors"
	"fmt"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/heal"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

// MaxArcs bounds the arcs one Digests call asks about.
const MaxArcs = 4096

// Handler serves the Heal service.
type Handler interface {
	HandleDigests(kind heal.Kind, arcs []heal.Arc) ([]heal.Digest, error)
	HandleItems(kind heal.Kind, arc heal.Arc, after string, limit int) ([]heal.Item, bool, error)
	// HandleLeave starts the node's hand-off and departure.
	HandleLeave() error
}

// Register serves h as the Heal service on s.
func Register(s grpc.ServiceRegistrar, h Handler) { fb.RegisterHealServer(s, server{h: h}) }

type server struct {
	fb.UnimplementedHealServer
	h Handler
}

func toStatus(err error) error {
	if errors.Is(err, heal.ErrBadRequest) {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

func badRequest(format string, a ...any) error {
	return toStatus(fmt.Errorf("%w: %s", heal.ErrBadRequest, fmt.Sprintf(format, a...)))
}

func decodeArc(a *fb.HealArc) (heal.Arc, error) {
	if a == nil {
		return heal.Arc{}, errors.New("arc missing")
	}
	lo, err := ring.IDFromBytes(a.LoBytes())
	if err != nil {
		return heal.Arc{}, err
	}
	hi, err := ring.IDFromBytes(a.HiBytes())
	if err != nil {
		return heal.Arc{}, err
	}
	return heal.Arc{Lo: lo, Hi: hi}, nil
}

func encodeArc(b *flatbuffers.Builder, a heal.Arc) flatbuffers.UOffsetT {
	lo, hi := b.CreateByteVector(a.Lo[:]), b.CreateByteVector(a.Hi[:])
	fb.HealArcStart(b)
	fb.HealArcAddLo(b, lo)
	fb.HealArcAddHi(b, hi)
	return fb.HealArcEnd(b)
}

func (s server) Digests(_ context.Context, r *fb.HealDigestsRequest) (*flatbuffers.Builder, error) {
	n := r.ArcsLength()
	if n > MaxArcs {
		return nil, badRequest("%d arcs (at most %d)", n, MaxArcs)
	}
	arcs := make([]heal.Arc, n)
	var a fb.HealArc
	for i := range n {
		if !r.Arcs(&a, i) {
			return nil, badRequest("arc %d missing", i)
		}
		arc, err := decodeArc(&a)
		if err != nil {
			return nil, badRequest("arc %d: %v", i, err)
		}
		arcs[i] = arc
	}
	ds, err := s.h.HandleDigests(heal.Kind(r.Kind()), arcs)
	if err != nil {
		return nil, toStatus(err)
	}
	b := flatbuffers.NewBuilder(64 + 40*len(ds))
	sums := make([]byte, 0, 32*len(ds))
	for _, d := range ds {
		sums = append(sums, d.Sum[:]...)
	}
	sv := b.CreateByteVector(sums)
	fb.HealDigestsReplyStartCountsVector(b, len(ds))
	for i := len(ds) - 1; i >= 0; i-- {
		b.PrependUint64(ds[i].Count)
	}
	cv := b.EndVector(len(ds))
	fb.HealDigestsReplyStart(b)
	fb.HealDigestsReplyAddCounts(b, cv)
	fb.HealDigestsReplyAddSums(b, sv)
	b.Finish(fb.HealDigestsReplyEnd(b))
	return b, nil
}

func (s server) Items(_ context.Context, r *fb.HealItemsRequest) (*flatbuffers.Builder, error) {
	arc, err := decodeArc(r.Arc(nil))
	if err != nil {
		return nil, badRequest("%v", err)
	}
	items, more, err := s.h.HandleItems(heal.Kind(r.Kind()), arc, string(r.AfterBytes()), int(min(r.Limit(), heal.MaxItems)))
	if err != nil {
		return nil, toStatus(err)
	}
	size := 64
	for _, it := range items {
		size += len(it.Key) + 48
	}
	b := flatbuffers.NewBuilder(size)
	offs := make([]flatbuffers.UOffsetT, len(items))
	for i, it := range items {
		k, d := b.CreateByteString([]byte(it.Key)), b.CreateByteVector(it.Digest[:])
		fb.HealItemStart(b)
		fb.HealItemAddKey(b, k)
		fb.HealItemAddDigest(b, d)
		offs[i] = fb.HealItemEnd(b)
	}
	iv := wire.TableVector(b, offs)
	fb.HealItemsReplyStart(b)
	fb.HealItemsReplyAddItems(b, iv)
	fb.HealItemsReplyAddMore(b, more)
	b.Finish(fb.HealItemsReplyEnd(b))
	return b, nil
}

func (s server) Leave(context.Context, *fb.HealLeaveRequest) (*flatbuffers.Builder, error) {
	if err := s.h.HandleLeave(); err != nil {
		return nil, toStatus(err)
	}
	b := flatbuffers.NewBuilder(16)
	fb.HealAckStart(b)
	b.Finish(fb.HealAckEnd(b))
	return b, nil
}

// Transport is heal.Peers over gRPC, on connections from a shared pool.
type Transport struct{ pool *wire.Pool }

// NewTransport returns a transport calling through pool; the pool's owner
// closes it.
func NewTransport(pool *wire.Pool) *Transport { return &Transport{pool: pool} }

var _ heal.Peers = (*Transport)(nil)

func (t *Transport) client(addr string) (fb.HealClient, error) {
	cc, err := t.pool.Get(addr)
	if err != nil {
		return nil, fmt.Errorf("heal: %s: %w", addr, err)
	}
	return fb.NewHealClient(cc), nil
}

// Digests asks the host at to for its digest of each arc.
func (t *Transport) Digests(ctx context.Context, to string, kind heal.Kind, arcs []heal.Arc) ([]heal.Digest, error) {
	c, err := t.client(to)
	if err != nil {
		return nil, err
	}
	b := flatbuffers.NewBuilder(64 + 80*len(arcs))
	offs := make([]flatbuffers.UOffsetT, len(arcs))
	for i, a := range arcs {
		offs[i] = encodeArc(b, a)
	}
	av := wire.TableVector(b, offs)
	fb.HealDigestsRequestStart(b)
	fb.HealDigestsRequestAddKind(b, byte(kind))
	fb.HealDigestsRequestAddArcs(b, av)
	b.Finish(fb.HealDigestsRequestEnd(b))
	r, err := c.Digests(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("heal: %s: %w", to, err)
	}
	sums := r.SumsBytes()
	if r.CountsLength() != len(arcs) || len(sums) != 32*len(arcs) {
		return nil, fmt.Errorf("heal: %s answered %d digests for %d arcs", to, r.CountsLength(), len(arcs))
	}
	out := make([]heal.Digest, len(arcs))
	for i := range out {
		out[i].Count = r.Counts(i)
		copy(out[i].Sum[:], sums[32*i:])
	}
	return out, nil
}

// Items lists the host's items on an arc.
func (t *Transport) Items(ctx context.Context, to string, kind heal.Kind, arc heal.Arc, after string, limit int) ([]heal.Item, bool, error) {
	c, err := t.client(to)
	if err != nil {
		return nil, false, err
	}
	b := flatbuffers.NewBuilder(160 + len(after))
	a := encodeArc(b, arc)
	av := b.CreateByteVector([]byte(after))
	fb.HealItemsRequestStart(b)
	fb.HealItemsRequestAddKind(b, byte(kind))
	fb.HealItemsRequestAddArc(b, a)
	fb.HealItemsRequestAddAfter(b, av)
	fb.HealItemsRequestAddLimit(b, uint32(max(limit, 0)))
	b.Finish(fb.HealItemsRequestEnd(b))
	r, err := c.Items(ctx, b)
	if err != nil {
		return nil, false, fmt.Errorf("heal: %s: %w", to, err)
	}
	if r.ItemsLength() > max(limit, 0) {
		return nil, false, fmt.Errorf("heal: %s: %d items, %d asked for", to, r.ItemsLength(), limit)
	}
	out := make([]heal.Item, 0, r.ItemsLength())
	var it fb.HealItem
	for i := range r.ItemsLength() {
		if !r.Items(&it, i) || len(it.DigestBytes()) != 32 {
			return nil, false, fmt.Errorf("heal: %s: item %d malformed", to, i)
		}
		var item heal.Item
		item.Key = string(it.KeyBytes())
		copy(item.Digest[:], it.DigestBytes())
		out = append(out, item)
	}
	return out, r.More(), nil
}
