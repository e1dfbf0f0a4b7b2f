package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/nodestatus"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

// Conn is a connection to one node. It is safe for concurrent use.
type Conn struct {
	addr   string
	cc     *grpc.ClientConn
	peer   fb.PeerClient
	client fb.ClientClient
	// failedAt is when a Cluster last failed to reach the node (Unix
	// nanoseconds), so that it stops preferring it for a while.
	failedAt atomic.Int64
}

// Dial prepares a connection to the node at addr with the member's
// credentials creds (credentials.NewTLS of an identity's ClientConfig). It
// does not wait for the node: the first call does, within its context's
// deadline.
func Dial(addr string, creds credentials.TransportCredentials) (*Conn, error) {
	cc, err := grpc.NewClient(addr, wire.DialOptions(creds)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &Conn{addr: addr, cc: cc, peer: fb.NewPeerClient(cc), client: fb.NewClientClient(cc)}, nil
}

// Leave asks the node to leave the cluster for good: it leaves the ring,
// hands off everything it holds to the nodes that take its place, and
// stops. Leave returns once the node has started to.
func (c *Conn) Leave(ctx context.Context) error {
	b := flatbuffers.NewBuilder(16)
	fb.HealLeaveRequestStart(b)
	b.Finish(fb.HealLeaveRequestEnd(b))
	if _, err := fb.NewHealClient(c.cc).Leave(ctx, b); err != nil {
		return fmt.Errorf("leave %s: %w", c.addr, err)
	}
	return nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.cc.Close() }

// Ping asks the node to prove it is alive and returns who it is.
func (c *Conn) Ping(ctx context.Context) (nodestatus.NodeInfo, error) {
	r, err := c.peer.Ping(ctx, pingRequest(0, nil), grpc.WaitForReady(true))
	if err != nil {
		return nodestatus.NodeInfo{}, fmt.Errorf("ping %s: %w", c.addr, err)
	}
	return nodestatus.DecodeNodeInfo(r.Node(nil)), nil
}

// Status returns the node's view of itself.
func (c *Conn) Status(ctx context.Context) (nodestatus.Status, error) {
	st, err := StatusVia(ctx, c.cc, grpc.WaitForReady(true))
	if err != nil {
		return nodestatus.Status{}, fmt.Errorf("status of %s: %w", c.addr, err)
	}
	return st, nil
}

// Collect has the node run a garbage collection cycle now (with dryRun,
// one that frees nothing) and returns its report.
func (c *Conn) Collect(ctx context.Context, dryRun bool) (nodestatus.GCReport, error) {
	b := flatbuffers.NewBuilder(32)
	fb.GCCollectRequestStart(b)
	fb.GCCollectRequestAddDryRun(b, dryRun)
	b.Finish(fb.GCCollectRequestEnd(b))
	r, err := fb.NewGCClient(c.cc).Collect(ctx, b, grpc.WaitForReady(true))
	if err != nil {
		if s, ok := status.FromError(err); ok {
			err = errors.New(s.Message())
		}
		return nodestatus.GCReport{}, fmt.Errorf("collect at %s: %w", c.addr, err)
	}
	return nodestatus.DecodeGCReport(r), nil
}

// StatusVia asks the node at the other end of cc for its view of itself.
func StatusVia(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (nodestatus.Status, error) {
	b := flatbuffers.NewBuilder(16)
	fb.StatusRequestStart(b)
	b.Finish(fb.StatusRequestEnd(b))
	r, err := fb.NewClientClient(cc).Status(ctx, b, opts...)
	if err != nil {
		return nodestatus.Status{}, err
	}
	return nodestatus.DecodeStatus(r)
}

// PingStream sends count pings carrying size bytes each over one stream,
// one at a time, and calls each with the round-trip time of every reply.
// A reply that does not echo its ping is an error.
func (c *Conn) PingStream(ctx context.Context, count, size int, each func(seq int, rtt time.Duration)) error {
	stream, err := c.peer.PingStream(ctx, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("ping stream to %s: %w", c.addr, err)
	}
	payload := make([]byte, size)
	for i := range count {
		for j := range payload {
			payload[j] = byte(i + j)
		}
		sent := time.Now()
		if err := stream.Send(pingRequest(uint64(i), payload)); err != nil {
			return fmt.Errorf("ping stream to %s: send: %w", c.addr, err)
		}
		r, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("ping stream to %s: receive: %w", c.addr, err)
		}
		if r.Seq() != uint64(i) || string(r.PayloadBytes()) != string(payload) {
			return fmt.Errorf("ping stream to %s: reply %d does not echo ping %d", c.addr, r.Seq(), i)
		}
		each(i, time.Since(sent))
	}
	if err := stream.CloseSend(); err != nil {
		return fmt.Errorf("ping stream to %s: close: %w", c.addr, err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("ping stream to %s: after close: %v", c.addr, err)
	}
	return nil
}

func pingRequest(seq uint64, payload []byte) *flatbuffers.Builder {
	b := flatbuffers.NewBuilder(64 + len(payload))
	var p flatbuffers.UOffsetT
	if payload != nil {
		p = b.CreateByteVector(payload)
	}
	fb.PingRequestStart(b)
	fb.PingRequestAddSeq(b, seq)
	fb.PingRequestAddSentUnixNano(b, time.Now().UnixNano())
	if payload != nil {
		fb.PingRequestAddPayload(b, p)
	}
	b.Finish(fb.PingRequestEnd(b))
	return b
}
