package ringrpc

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

// serve starts a host on a loopback gRPC server and returns it with its
// address.
func serve(t *testing.T, create bool) (*ring.Host, string, *Transport) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pool := wire.NewPool(insecure.NewCredentials())
	t.Cleanup(func() { pool.Close() })
	tr := NewTransport(pool)
	h, err := ring.New(ring.Config{Addr: ln.Addr().String()}, tr)
	if err != nil {
		t.Fatal(err)
	}
	if create {
		if err := h.Create(); err != nil {
			t.Fatal(err)
		}
	}
	s := grpc.NewServer(wire.ServerOptions(nil)...)
	Register(s, h)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return h, ln.Addr().String(), tr
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestCallsAndErrors(t *testing.T) {
	h, addr, _ := serve(t, true)
	pool := wire.NewPool(insecure.NewCredentials())
	defer pool.Close()
	tr := NewTransport(pool)

	refs, err := tr.VNodes(ctx(t), addr)
	if err != nil || len(refs) != 8 {
		t.Fatalf("VNodes = %v, %v", refs, err)
	}
	if err := tr.Ping(ctx(t), refs[0]); err != nil {
		t.Fatal(err)
	}
	st, err := tr.GetState(ctx(t), refs[0])
	if err != nil || st.Pred != refs[7] || st.Succs[0] != refs[1] {
		t.Fatalf("GetState = %+v, %v", st, err)
	}
	key := ring.HashKey([]byte("k"))
	reply, err := tr.Next(ctx(t), refs[0], key)
	if err != nil || (!reply.Found && len(reply.Candidates) == 0) {
		t.Fatalf("Next = %+v, %v", reply, err)
	}
	want, _ := h.HandleNext(refs[0].ID, key)
	if reply.Found != want.Found || len(reply.Succs) != len(want.Succs) || len(reply.Candidates) != len(want.Candidates) {
		t.Fatalf("Next over gRPC = %+v, in process %+v", reply, want)
	}
	if err := tr.Rectify(ctx(t), refs[1], refs[0]); err != nil {
		t.Fatal(err)
	}
	note := ring.LeaveNote{Leaving: refs[2], Pred: refs[1], Succs: refs[3:5]}
	if err := tr.Leaving(ctx(t), refs[3], note); err != nil {
		t.Fatal(err)
	}
	if st, _ := tr.GetState(ctx(t), refs[3]); st.Pred != refs[1] {
		t.Fatalf("after a leaving predecessor, pred = %s, want %s", st.Pred, refs[1])
	}

	unknown := ring.Ref{ID: ring.HashKey([]byte("nobody")), Addr: addr}
	if err := tr.Ping(ctx(t), unknown); !errors.Is(err, ring.ErrNoVNode) {
		t.Errorf("Ping of an unknown vnode: %v, want ErrNoVNode", err)
	}
	if err := tr.Ping(ctx(t), ring.Ref{ID: unknown.ID, Addr: "127.0.0.1:1"}); !errors.Is(err, ring.ErrUnreachable) {
		t.Errorf("Ping of a dead host: %v, want ErrUnreachable", err)
	}
	_, other, _ := serve(t, false)
	if _, err := tr.VNodes(ctx(t), other); !errors.Is(err, ring.ErrNotMember) {
		t.Errorf("VNodes of a non-member: %v, want ErrNotMember", err)
	}
}

// Well-formed messages with bad fields (an id of the wrong length, a
// missing required ref) are refused with InvalidArgument.
func TestBadFields(t *testing.T) {
	_, addr, tr := serve(t, true)
	c, err := tr.client(addr)
	if err != nil {
		t.Fatal(err)
	}
	b := flatbuffers.NewBuilder(64)
	short := b.CreateByteVector([]byte{1, 2, 3})
	fb.VNodeRequestStart(b)
	fb.VNodeRequestAddTarget(b, short)
	b.Finish(fb.VNodeRequestEnd(b))
	if _, err := c.Ping(ctx(t), b); status.Code(err) != codes.InvalidArgument {
		t.Errorf("short target: %v", err)
	}
	refs, _ := tr.VNodes(ctx(t), addr)
	b = flatbuffers.NewBuilder(64)
	target := b.CreateByteVector(refs[0].ID[:])
	fb.RectifyRequestStart(b)
	fb.RectifyRequestAddTarget(b, target)
	b.Finish(fb.RectifyRequestEnd(b))
	if _, err := c.Rectify(ctx(t), b); status.Code(err) != codes.InvalidArgument {
		t.Errorf("rectify without from: %v", err)
	}
	b = flatbuffers.NewBuilder(64)
	target = b.CreateByteVector(refs[0].ID[:])
	key := b.CreateByteVector(make([]byte, 31))
	fb.NextRequestStart(b)
	fb.NextRequestAddTarget(b, target)
	fb.NextRequestAddKey(b, key)
	b.Finish(fb.NextRequestEnd(b))
	if _, err := c.Next(ctx(t), b); status.Code(err) != codes.InvalidArgument {
		t.Errorf("31-byte key: %v", err)
	}
}

// A vnode list longer than any host sends is refused before anything is
// sized by its length.
func TestDecodeRefsBoundsTheCount(t *testing.T) {
	_, err := DecodeRefs(ring.MaxRefs+1, func(*fb.VNodeRef, int) bool {
		t.Fatal("an element read past the bound")
		return false
	})
	if !errors.Is(err, errBadRequest) {
		t.Errorf("%d refs: %v", ring.MaxRefs+1, err)
	}
}
