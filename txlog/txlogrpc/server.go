package txlogrpc

import (
	"context"
	"fmt"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"

	"github.com/difuse/difuse/txlog"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

// Register serves h as the TxLog service on s.
func Register(s grpc.ServiceRegistrar, h txlog.Handler) {
	fb.RegisterTxLogServer(s, server{h: h})
}

type server struct {
	fb.UnimplementedTxLogServer
	h txlog.Handler
}

func (s server) Prepare(_ context.Context, r *fb.PrepareRequest) (*flatbuffers.Builder, error) {
	rep, err := s.h.HandlePrepare(string(r.Partition()), decodeBallot(r.Ballot(nil)))
	if err != nil {
		return nil, ToStatus(err)
	}
	b := flatbuffers.NewBuilder(128)
	promised := encodeBallot(b, rep.Promised)
	lastBal := encodeBallot(b, rep.LastBal)
	lastHash := hashVector(b, rep.LastHash)
	fb.PrepareReplyStart(b)
	fb.PrepareReplyAddOk(b, rep.OK)
	fb.PrepareReplyAddPromised(b, promised)
	fb.PrepareReplyAddLast(b, rep.Last)
	if lastHash != 0 {
		fb.PrepareReplyAddLastHash(b, lastHash)
	}
	fb.PrepareReplyAddLastBallot(b, lastBal)
	fb.PrepareReplyAddCommit(b, rep.Commit)
	b.Finish(fb.PrepareReplyEnd(b))
	return b, nil
}

func (s server) Append(ctx context.Context, r *fb.AppendRequest) (*flatbuffers.Builder, error) {
	prev, err := decodeHash("prev hash", r.PrevHashBytes())
	if err != nil {
		return nil, ToStatus(err)
	}
	txs, err := decodeTxs(r.TxsLength(), r.Txs)
	if err != nil {
		return nil, ToStatus(err)
	}
	req := txlog.AppendRequest{
		Partition:  string(r.Partition()),
		Ballot:     decodeBallot(r.Ballot(nil)),
		PrevHeight: r.PrevHeight(),
		PrevHash:   prev,
		Txs:        txs,
		Commit:     r.Commit(),
		Install:    r.Install(),
	}
	rep, err := s.h.HandleAppend(ctx, req)
	if err != nil {
		return nil, ToStatus(err)
	}
	b := flatbuffers.NewBuilder(64)
	promised := encodeBallot(b, rep.Promised)
	fb.AppendReplyStart(b)
	fb.AppendReplyAddStale(b, rep.Stale)
	fb.AppendReplyAddPromised(b, promised)
	fb.AppendReplyAddMismatch(b, rep.Mismatch)
	fb.AppendReplyAddLast(b, rep.Last)
	b.Finish(fb.AppendReplyEnd(b))
	return b, nil
}

func (s server) Fetch(_ context.Context, r *fb.FetchRequest) (*flatbuffers.Builder, error) {
	if r.Limit() == 0 {
		return nil, ToStatus(fmt.Errorf("%w: fetch of no entries", txlog.ErrBadRequest))
	}
	txs, err := s.h.HandleFetch(string(r.Partition()), r.From(), int(min(r.Limit(), 1<<16)))
	if err != nil {
		return nil, ToStatus(err)
	}
	b := flatbuffers.NewBuilder(1024)
	v := encodeTxs(b, txs)
	fb.FetchReplyStart(b)
	fb.FetchReplyAddTxs(b, v)
	b.Finish(fb.FetchReplyEnd(b))
	return b, nil
}

func (s server) ReadLocal(_ context.Context, r *fb.ReadLocalRequest) (*flatbuffers.Builder, error) {
	rec, err := s.h.HandleReadLocal(string(r.Partition()), string(r.Name()))
	if err != nil {
		return nil, ToStatus(err)
	}
	b := flatbuffers.NewBuilder(128 + len(rec.Value))
	b.Finish(encodeRecord(b, rec))
	return b, nil
}

func (s server) Snapshot(_ context.Context, r *fb.SnapshotRequest) (*flatbuffers.Builder, error) {
	pg, err := s.h.HandleSnapshot(string(r.Partition()), r.Height(), string(r.After()))
	if err != nil {
		return nil, ToStatus(err)
	}
	size := 256
	for _, rec := range pg.Records {
		size += 128 + len(rec.Name) + len(rec.Value)
	}
	b := flatbuffers.NewBuilder(size)
	hash := hashVector(b, pg.Hash)
	ballot := encodeBallot(b, pg.Ballot)
	config := wire.StringVector(b, pg.Config)
	records := encodeRecords(b, pg.Records)
	fb.SnapshotReplyStart(b)
	fb.SnapshotReplyAddHeight(b, pg.Height)
	if hash != 0 {
		fb.SnapshotReplyAddHash(b, hash)
	}
	fb.SnapshotReplyAddBallot(b, ballot)
	fb.SnapshotReplyAddConfig(b, config)
	fb.SnapshotReplyAddConfigAt(b, pg.ConfigAt)
	fb.SnapshotReplyAddRecords(b, records)
	fb.SnapshotReplyAddMore(b, pg.More)
	b.Finish(fb.SnapshotReplyEnd(b))
	return b, nil
}

func (s server) Forward(ctx context.Context, r *fb.TxRequest) (*flatbuffers.Builder, error) {
	req, err := DecodeRequest(r)
	if err != nil {
		return nil, ToStatus(err)
	}
	resp, err := s.h.HandleForward(ctx, req)
	if err != nil {
		return nil, ToStatus(err)
	}
	return EncodeResponse(resp), nil
}
