package healrpc

import (
	"context"
	"errors"
	"net"
	"testing"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/heal"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

// fake answers from fixed items and records what it was asked.
type fake struct {
	arcs  []heal.Arc
	after string
	left  bool
}

func (f *fake) HandleDigests(kind heal.Kind, arcs []heal.Arc) ([]heal.Digest, error) {
	if !kind.Valid() {
		return nil, heal.ErrBadRequest
	}
	f.arcs = arcs
	out := make([]heal.Digest, len(arcs))
	for i := range out {
		out[i] = heal.Digest{Count: uint64(i + 1)}
		out[i].Sum[0] = byte(i + 7)
	}
	return out, nil
}

func (f *fake) HandleItems(kind heal.Kind, arc heal.Arc, after string, limit int) ([]heal.Item, bool, error) {
	f.after = after
	return []heal.Item{{Key: "kv/a", Digest: [32]byte{1}}, {Key: "kv/b\x00binary", Digest: [32]byte{2}}}, true, nil
}

func (f *fake) HandleLeave() error { f.left = true; return nil }

func serve(t *testing.T, h Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(wire.ServerOptions(nil)...)
	Register(s, h)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

func TestRoundTrip(t *testing.T) {
	f := &fake{}
	addr := serve(t, f)
	pool := wire.NewPool(insecure.NewCredentials())
	defer pool.Close()
	tr := NewTransport(pool)
	ctx := context.Background()
	arcs := []heal.Arc{{Lo: ring.HashKey([]byte("a")), Hi: ring.HashKey([]byte("b"))}, {Lo: ring.HashKey([]byte("c")), Hi: ring.HashKey([]byte("d"))}}
	ds, err := tr.Digests(ctx, addr, heal.KindBlock, arcs)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[1].Count != 2 || ds[1].Sum[0] != 8 || len(f.arcs) != 2 || f.arcs[1] != arcs[1] {
		t.Fatalf("digests %+v, server saw %+v", ds, f.arcs)
	}
	items, more, err := tr.Items(ctx, addr, heal.KindPartition, arcs[0], "kv/0", 10)
	if err != nil {
		t.Fatal(err)
	}
	if !more || len(items) != 2 || items[1].Key != "kv/b\x00binary" || items[1].Digest[0] != 2 || f.after != "kv/0" {
		t.Fatalf("items %+v more %v, server saw after %q", items, more, f.after)
	}
	if _, err := tr.Digests(ctx, addr, heal.Kind(9), arcs); status.Code(errors.Unwrap(err)) != codes.InvalidArgument {
		t.Fatalf("unknown kind: %v, want InvalidArgument", err)
	}
}

// TestMalformedRefused: an arc whose ids are not 32 bytes is refused as
// InvalidArgument, and the server goes on serving.
func TestMalformedRefused(t *testing.T) {
	addr := serve(t, &fake{})
	pool := wire.NewPool(insecure.NewCredentials())
	defer pool.Close()
	cc, err := pool.Get(addr)
	if err != nil {
		t.Fatal(err)
	}
	b := flatbuffers.NewBuilder(64)
	lo, hi := b.CreateByteVector([]byte{1, 2, 3}), b.CreateByteVector(make([]byte, 32))
	fb.HealArcStart(b)
	fb.HealArcAddLo(b, lo)
	fb.HealArcAddHi(b, hi)
	arc := fb.HealArcEnd(b)
	fb.HealItemsRequestStart(b)
	fb.HealItemsRequestAddKind(b, byte(heal.KindBlock))
	fb.HealItemsRequestAddArc(b, arc)
	b.Finish(fb.HealItemsRequestEnd(b))
	if _, err := fb.NewHealClient(cc).Items(context.Background(), b); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("short arc id: %v, want InvalidArgument", err)
	}
	if _, err := NewTransport(pool).Digests(context.Background(), addr, heal.KindBlock, nil); err != nil {
		t.Fatalf("after a malformed request: %v", err)
	}
}
