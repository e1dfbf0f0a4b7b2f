package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/blockstore/blockrpc"
	"github.com/difuse/difuse/heal"
	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/nodestatus"
	"github.com/difuse/difuse/txlog"
	"github.com/difuse/difuse/txlog/txlogrpc"
	"github.com/difuse/difuse/wire/fb"
)

// info returns the node's identity and addresses.
func (n *Node) info() nodestatus.NodeInfo {
	return nodestatus.NodeInfo{ID: n.id, GRPCAddr: n.ring.Addr(), HTTPAddr: n.HTTPAddr(), Version: Version()}
}

// Status returns the node's view of itself.
func (n *Node) Status() nodestatus.Status {
	st := n.db.Stats()
	var via string
	if p := n.joinedVia.Load(); p != nil {
		via = *p
	}
	return nodestatus.Status{
		Node:       n.info(),
		Started:    n.start,
		DataDir:    n.db.Dir(),
		JoinedVia:  via,
		Store:      nodestatus.Store{LSMBytes: st.LSMBytes, VlogBytes: st.VlogBytes, FreeBytes: st.FreeBytes},
		RSSBytes:   rssBytes(),
		Goroutines: runtime.NumGoroutine(),
		Blocks:     n.blocks.Stats(),
		Heal:       n.healer.Stats(),
		VNodes:     n.ring.Status(),
		Replicas:   n.ring.Config().Replicas,
		Recent:     n.recent.list(),
		GC:         n.gc.Stats(),
	}
}

// Capacity reports the space files take and have left, as this node alone
// sees it (see nodestatus.Capacity).
func (n *Node) Capacity(context.Context) (used, free uint64, err error) {
	used, free = nodestatus.Capacity([]nodestatus.Status{n.Status()})
	return used, free, nil
}

// rssBytes returns the process's resident set size, or 0 where /proc does
// not say.
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// peerService serves the node-to-node gRPC service.
type peerService struct {
	fb.UnimplementedPeerServer
	n *Node
}

func (s peerService) pingReply(req *fb.PingRequest) *flatbuffers.Builder {
	b := flatbuffers.NewBuilder(128 + req.PayloadLength())
	info := nodestatus.EncodeNodeInfo(b, s.n.info())
	var payload flatbuffers.UOffsetT
	if req.PayloadLength() > 0 {
		payload = b.CreateByteVector(req.PayloadBytes())
	}
	fb.PingReplyStart(b)
	fb.PingReplyAddNode(b, info)
	fb.PingReplyAddSeq(b, req.Seq())
	fb.PingReplyAddSentUnixNano(b, req.SentUnixNano())
	if payload != 0 {
		fb.PingReplyAddPayload(b, payload)
	}
	b.Finish(fb.PingReplyEnd(b))
	return b
}

func (s peerService) Ping(_ context.Context, req *fb.PingRequest) (*flatbuffers.Builder, error) {
	return s.pingReply(req), nil
}

func (s peerService) PingStream(stream fb.Peer_PingStreamServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(s.pingReply(req)); err != nil {
			return err
		}
	}
}

// clientService serves the client-to-node gRPC service.
type clientService struct {
	fb.UnimplementedClientServer
	n *Node
}

func (s clientService) Status(context.Context, *fb.StatusRequest) (*flatbuffers.Builder, error) {
	return nodestatus.EncodeStatus(s.n.Status()), nil
}

// Txn runs a transaction-log request at the partition's leader.
func (s clientService) Txn(ctx context.Context, r *fb.TxRequest) (*flatbuffers.Builder, error) {
	req, err := txlogrpc.DecodeRequest(r)
	if err != nil {
		return nil, txlogrpc.ToStatus(err)
	}
	if callerRole(ctx) == identity.RoleClient && !clientPartition(req.Partition) {
		return nil, s.n.refuse(ctx, "/fb.Client/Txn", codes.PermissionDenied, fmt.Sprintf("a client may not reach the partition %q", req.Partition))
	}
	resp, err := s.n.do(ctx, req)
	if err != nil {
		return nil, txlogrpc.ToStatus(err)
	}
	return txlogrpc.EncodeResponse(resp), nil
}

// clientPartition reports whether a mount (a member in the client role)
// may run requests on partition: the filesystem's and the key-value
// store's, not the cluster's own (gc, access).
func clientPartition(partition string) bool {
	return strings.HasPrefix(partition, "fs/") || strings.HasPrefix(partition, "kv/")
}

// do runs a client's transaction-log request within the node's request
// timeout, or the caller's deadline if that is sooner.
func (n *Node) do(ctx context.Context, req txlog.Request) (txlog.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout)
	defer cancel()
	return n.txlog.Do(ctx, req)
}

// requestContext bounds an HTTP request's work by the node's request
// timeout.
func (n *Node) requestContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), n.cfg.RequestTimeout)
}

// BlockPut stores a block a client sends in pieces, at the level its first
// piece names.
func (s clientService) BlockPut(stream fb.Client_BlockPutServer) error {
	var l level.Level
	first := true
	recv := func() (*fb.BlockPiece, error) {
		p, err := stream.Recv()
		if err == nil && first {
			l, first = level.Level(p.Level()), false
		}
		return p, err
	}
	_, data, _, err := blockrpc.ReceiveBlock(recv)
	if err != nil {
		return blockrpc.ToStatus(err)
	}
	if !l.Valid() {
		return status.Errorf(codes.InvalidArgument, "unknown level %d", l)
	}
	ctx, cancel := context.WithTimeout(stream.Context(), s.n.cfg.RequestTimeout)
	defer cancel()
	h, err := s.n.blocks.Set(ctx, data, l)
	if err != nil {
		return blockrpc.ToStatus(err)
	}
	b := flatbuffers.NewBuilder(64)
	v := b.CreateByteVector(h[:])
	fb.BlockPutReplyStart(b)
	fb.BlockPutReplyAddHash(b, v)
	b.Finish(fb.BlockPutReplyEnd(b))
	return stream.SendAndClose(b)
}

// BlockGet reads a block for a client, at the level it names.
func (s clientService) BlockGet(r *fb.BlockRequest, stream fb.Client_BlockGetServer) error {
	h, err := blockstore.HashFromBytes(r.HashBytes())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	l := level.Level(r.Level())
	if !l.Valid() {
		return status.Errorf(codes.InvalidArgument, "unknown level %d", l)
	}
	ctx, cancel := context.WithTimeout(stream.Context(), s.n.cfg.RequestTimeout)
	defer cancel()
	data, err := s.n.blocks.Get(ctx, h, l)
	if err != nil {
		return blockrpc.ToStatus(err)
	}
	return blockrpc.SendBlock(stream.Send, h, data, false, 0)
}

// maxCheck bounds the blocks one BlockCheck asks about.
const maxCheck = 1024

// BlockCheck counts, for each block, the hosts of its replica set that
// hold it.
func (s clientService) BlockCheck(ctx context.Context, r *fb.BlockHashes) (*flatbuffers.Builder, error) {
	hashes, err := blockrpc.DecodeHashes(r, maxCheck)
	if err != nil {
		return nil, blockrpc.ToStatus(err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.n.cfg.RequestTimeout)
	defer cancel()
	counts, sets, err := s.n.blocks.Count(ctx, hashes)
	if err != nil {
		return nil, blockrpc.ToStatus(err)
	}
	held, of := make([]byte, len(hashes)), make([]byte, len(hashes))
	for i := range hashes {
		held[i], of[i] = byte(min(counts[i], 255)), byte(min(sets[i], 255))
	}
	b := flatbuffers.NewBuilder(64 + 2*len(hashes))
	hv, ov := b.CreateByteVector(held), b.CreateByteVector(of)
	fb.BlockCountsStart(b)
	fb.BlockCountsAddHeld(b, hv)
	fb.BlockCountsAddReplicas(b, ov)
	b.Finish(fb.BlockCountsEnd(b))
	return b, nil
}

// healService serves the Heal service: the healer's digests and listings,
// and a client's request that the node leave.
type healService struct{ n *Node }

func (h healService) HandleDigests(kind heal.Kind, arcs []heal.Arc) ([]heal.Digest, error) {
	return h.n.healer.HandleDigests(kind, arcs)
}

func (h healService) HandleItems(kind heal.Kind, arc heal.Arc, after string, limit int) ([]heal.Item, bool, error) {
	return h.n.healer.HandleItems(kind, arc, after, limit)
}

// HandleLeave starts the node's departure, unless fewer than N nodes would
// be left: replica sets never shrink below N hosts (see txlog), so the
// node could not hand off its place in them.
func (h healService) HandleLeave() error {
	if others, n := len(h.n.ring.KnownHosts()), h.n.ring.Config().Replicas; others < n {
		return fmt.Errorf("%w: %d other nodes would be left, fewer than the %d replicas every key needs", heal.ErrBadRequest, others, n)
	}
	h.n.leaveOnce.Do(func() { close(h.n.leaveReq) })
	return nil
}
