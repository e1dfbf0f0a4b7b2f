package blockrpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/internal/memtest"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/ring/ringrpc"
	"github.com/difuse/difuse/store"
	"github.com/difuse/difuse/store/badgerdb"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

type host struct {
	addr string
	svc  *blockstore.Service
	dir  string // the block store's directory
}

// startCluster runs n hosts with the ring and the block store on loopback
// gRPC, the blocks in temporary directories; onDisk adds the node's
// database beside them, which keeps the free-space reserve.
func startCluster(t testing.TB, n int, onDisk bool) []*host {
	t.Helper()
	var hosts []*host
	var rings []*ring.Host
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pool := wire.NewPool(insecure.NewCredentials())
		t.Cleanup(func() { pool.Close() })
		rh, err := ring.New(ring.Config{Addr: addr, TickInterval: 50 * time.Millisecond, CallTimeout: 500 * time.Millisecond}, ringrpc.NewTransport(pool))
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		var space func(int64) error
		if onDisk {
			// The node's database sits beside the blocks and keeps the reserve.
			bdb, err := badgerdb.Open(badgerdb.Options{Dir: t.TempDir(), MinFreeBytes: -1, GCInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { bdb.Close() })
			space = bdb.CheckSpace
		}
		local, err := blockstore.OpenLocal(dir, space)
		if err != nil {
			t.Fatal(err)
		}
		svc, err := blockstore.New(blockstore.Config{Addr: addr}, rh, NewTransport(pool), local)
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(wire.ServerOptions(nil)...)
		ringrpc.Register(srv, rh)
		Register(srv, svc)
		go srv.Serve(ln)
		t.Cleanup(srv.Stop)
		if i == 0 {
			err = rh.Create()
		} else {
			err = rh.Join(context.Background(), hosts[0].addr)
		}
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); rh.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done; svc.Wait() })
		hosts = append(hosts, &host{addr, svc, dir})
		rings = append(rings, rh)
	}
	// Wait until every host places keys on min(3, n) hosts.
	full := func() bool {
		for _, rh := range rings {
			for k := range 64 {
				res, err := rh.Lookup(context.Background(), ring.HashKey([]byte{byte(k)}), 3)
				if err != nil || len(res.Replicas) != min(3, n) {
					return false
				}
			}
		}
		return true
	}
	for deadline := time.Now().Add(20 * time.Second); !full(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("ring did not settle")
		}
	}
	return hosts
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestBlocksOverGRPC(t *testing.T) {
	hosts := startCluster(t, 3, false)
	data := make([]byte, 5<<20+123) // many pieces, an odd tail
	for i := range data {
		data[i] = byte(i * 7)
	}
	h, err := hosts[0].svc.Set(ctxT(t), data, level.All)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range hosts {
		got, err := x.svc.Get(ctxT(t), h, level.Quorum)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get via %s: %d bytes, %v", x.addr, len(got), err)
		}
	}
	empty, err := hosts[1].svc.Set(ctxT(t), nil, level.Quorum)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := hosts[2].svc.Get(ctxT(t), empty, level.All); err != nil || len(got) != 0 {
		t.Fatalf("the empty block: %d bytes, %v", len(got), err)
	}

	tr := NewTransport(wire.NewPool(insecure.NewCredentials()))
	present, err := tr.Has(ctxT(t), hosts[1].addr, []blockstore.Hash{h, blockstore.Sum([]byte("nothing"))}, false)
	if err != nil || !present[0] || present[1] {
		t.Fatalf("Has = %v, %v", present, err)
	}
	if _, err := tr.Get(ctxT(t), hosts[1].addr, blockstore.Sum([]byte("nothing"))); !errors.Is(err, blockstore.ErrNotFound) {
		t.Errorf("Get of an unknown block: %v, want ErrNotFound", err)
	}
	// A damaged copy is refused by its holder with ErrCorrupt.
	bad := bytes.Clone(data)
	bad[4<<20] ^= 1
	if err := os.WriteFile(filepath.Join(hosts[1].dir, h.String()[:2], h.String()), bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Get(ctxT(t), hosts[1].addr, h); !errors.Is(err, blockstore.ErrCorrupt) {
		t.Errorf("Get of a damaged copy: %v, want ErrCorrupt", err)
	}
	if err := tr.Put(ctxT(t), hosts[1].addr, blockstore.Sum([]byte("x")), []byte("y"), true); !errors.Is(err, blockstore.ErrCorrupt) {
		t.Errorf("Put under the wrong hash: %v, want ErrCorrupt", err)
	}
	if err := hosts[2].svc.Delete(ctxT(t), h, level.All); err != nil {
		t.Fatal(err)
	}
	if _, err := hosts[0].svc.Get(ctxT(t), h, level.Lazy); !errors.Is(err, blockstore.ErrNotFound) {
		t.Errorf("Get after Delete: %v, want ErrNotFound", err)
	}
}

func TestBadMessages(t *testing.T) {
	hosts := startCluster(t, 1, false)
	cc, err := grpc.NewClient(hosts[0].addr, wire.DialOptions(insecure.NewCredentials())...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := fb.NewBlocksClient(cc)
	b := flatbuffers.NewBuilder(64)
	v := b.CreateByteVector(make([]byte, 33))
	fb.BlockHashesStart(b)
	fb.BlockHashesAddHashes(b, v)
	b.Finish(fb.BlockHashesEnd(b))
	if _, err := c.Has(ctxT(t), b); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Has with 33 bytes of hashes: %v", err)
	}
	// A Put that announces more than it sends, and one that is too large.
	for _, size := range []int{10, blockstore.MaxBlockBytes + 1} {
		stream, err := c.Put(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		h := blockstore.Sum([]byte("abc"))
		stream.Send(pieceMessage(h, size, false, 0, []byte("abc"), true))
		if _, err := stream.CloseAndRecv(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("Put announcing %d bytes, sending 3: %v", size, err)
		}
	}
	if _, err := c.Delete(ctxT(t), RequestMessage(blockstore.Hash{}, false, 0)); err != nil {
		t.Errorf("Delete of an absent block: %v", err)
	}
}

// The block store's errors, and a full disk, keep their identity across
// the wire.
func TestErrorsRoundTrip(t *testing.T) {
	for _, want := range []error{blockstore.ErrNotFound, blockstore.ErrCorrupt, store.ErrNoSpace} {
		if err := FromStatus("h1", ToStatus(fmt.Errorf("context: %w", want))); !errors.Is(err, want) {
			t.Errorf("%v came back as %v", want, err)
		}
	}
}

// A first piece that announces the largest block but carries three bytes
// costs what it carries, not what it announces.
func TestReceiveBlockGrowsWithTheBytes(t *testing.T) {
	piece := pieceMessage(blockstore.Sum([]byte("abc")), blockstore.MaxBlockBytes, false, 0, []byte("abc"), true).FinishedBytes()
	var err error
	n := memtest.Allocated(func() {
		sent := false
		_, _, _, err = ReceiveBlock(func() (*fb.BlockPiece, error) {
			if sent {
				return nil, io.EOF
			}
			sent = true
			return fb.GetRootAsBlockPiece(piece, 0), nil
		})
	})
	if !errors.Is(err, errBadRequest) {
		t.Errorf("3 of %d bytes: %v", blockstore.MaxBlockBytes, err)
	}
	if n > 1<<20 {
		t.Errorf("receiving 3 bytes that announce %d allocated %d bytes", blockstore.MaxBlockBytes, n)
	}
}
