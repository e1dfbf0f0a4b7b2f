package txlogrpc

import (
	"context"
	"fmt"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/difuse/difuse/txlog"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

// Transport is txlog.Transport over gRPC, on connections from a shared
// pool.
type Transport struct {
	pool *wire.Pool
}

// NewTransport returns a transport calling through pool; the pool's owner
// closes it.
func NewTransport(pool *wire.Pool) *Transport { return &Transport{pool: pool} }

var _ txlog.Transport = (*Transport)(nil)

func (t *Transport) client(addr string) (fb.TxLogClient, error) {
	cc, err := t.pool.Get(addr)
	if err != nil {
		return nil, fmt.Errorf("txlog: %s: %w", addr, err)
	}
	return fb.NewTxLogClient(cc), nil
}

// Prepare asks the replica at to to promise ballot b for the partition.
func (t *Transport) Prepare(ctx context.Context, to, partition string, bal txlog.Ballot) (txlog.PrepareReply, error) {
	c, err := t.client(to)
	if err != nil {
		return txlog.PrepareReply{}, err
	}
	b := flatbuffers.NewBuilder(128)
	p := b.CreateString(partition)
	ballot := encodeBallot(b, bal)
	fb.PrepareRequestStart(b)
	fb.PrepareRequestAddPartition(b, p)
	fb.PrepareRequestAddBallot(b, ballot)
	b.Finish(fb.PrepareRequestEnd(b))
	r, err := c.Prepare(ctx, b)
	if err != nil {
		return txlog.PrepareReply{}, FromStatus(to, err)
	}
	lastHash, err := decodeHash("last hash", r.LastHashBytes())
	if err != nil {
		return txlog.PrepareReply{}, err
	}
	return txlog.PrepareReply{
		OK:       r.Ok(),
		Promised: decodeBallot(r.Promised(nil)),
		Last:     r.Last(),
		LastHash: lastHash,
		LastBal:  decodeBallot(r.LastBallot(nil)),
		Commit:   r.Commit(),
	}, nil
}

// Append gives the replica at to a leader's entries.
func (t *Transport) Append(ctx context.Context, to string, req txlog.AppendRequest) (txlog.AppendReply, error) {
	c, err := t.client(to)
	if err != nil {
		return txlog.AppendReply{}, err
	}
	size := 256
	for _, tx := range req.Txs {
		for _, op := range tx.Ops {
			size += 128 + len(op.Name) + len(op.Value)
		}
	}
	b := flatbuffers.NewBuilder(size)
	p := b.CreateString(req.Partition)
	ballot := encodeBallot(b, req.Ballot)
	prev := hashVector(b, req.PrevHash)
	txs := encodeTxs(b, req.Txs)
	fb.AppendRequestStart(b)
	fb.AppendRequestAddPartition(b, p)
	fb.AppendRequestAddBallot(b, ballot)
	fb.AppendRequestAddPrevHeight(b, req.PrevHeight)
	if prev != 0 {
		fb.AppendRequestAddPrevHash(b, prev)
	}
	fb.AppendRequestAddTxs(b, txs)
	fb.AppendRequestAddCommit(b, req.Commit)
	fb.AppendRequestAddInstall(b, req.Install)
	b.Finish(fb.AppendRequestEnd(b))
	r, err := c.Append(ctx, b)
	if err != nil {
		return txlog.AppendReply{}, FromStatus(to, err)
	}
	return txlog.AppendReply{Stale: r.Stale(), Promised: decodeBallot(r.Promised(nil)), Mismatch: r.Mismatch(), Last: r.Last()}, nil
}

// Fetch reads up to limit entries of the replica's log from height from on.
func (t *Transport) Fetch(ctx context.Context, to, partition string, from uint64, limit int) ([]*txlog.Tx, error) {
	c, err := t.client(to)
	if err != nil {
		return nil, err
	}
	b := flatbuffers.NewBuilder(64 + len(partition))
	p := b.CreateString(partition)
	fb.FetchRequestStart(b)
	fb.FetchRequestAddPartition(b, p)
	fb.FetchRequestAddFrom(b, from)
	fb.FetchRequestAddLimit(b, uint32(max(limit, 0)))
	b.Finish(fb.FetchRequestEnd(b))
	r, err := c.Fetch(ctx, b)
	if err != nil {
		return nil, FromStatus(to, err)
	}
	if limit > 0 && r.TxsLength() > limit {
		return nil, fmt.Errorf("%w: %s sent %d entries, %d asked for", txlog.ErrBadRequest, to, r.TxsLength(), limit)
	}
	return decodeTxs(r.TxsLength(), r.Txs)
}

// ReadLocal reads the replica's committed state of a record.
func (t *Transport) ReadLocal(ctx context.Context, to, partition, name string) (txlog.Record, error) {
	c, err := t.client(to)
	if err != nil {
		return txlog.Record{}, err
	}
	b := flatbuffers.NewBuilder(64 + len(partition) + len(name))
	p, n := b.CreateString(partition), b.CreateString(name)
	fb.ReadLocalRequestStart(b)
	fb.ReadLocalRequestAddPartition(b, p)
	fb.ReadLocalRequestAddName(b, n)
	b.Finish(fb.ReadLocalRequestEnd(b))
	r, err := c.ReadLocal(ctx, b)
	if err != nil {
		return txlog.Record{}, FromStatus(to, err)
	}
	return decodeRecord(r)
}

// Snapshot reads a page of the replica's records at a committed height.
func (t *Transport) Snapshot(ctx context.Context, to, partition string, height uint64, after string) (txlog.SnapshotPage, error) {
	c, err := t.client(to)
	if err != nil {
		return txlog.SnapshotPage{}, err
	}
	b := flatbuffers.NewBuilder(64 + len(partition) + len(after))
	p, a := b.CreateString(partition), b.CreateString(after)
	fb.SnapshotRequestStart(b)
	fb.SnapshotRequestAddPartition(b, p)
	fb.SnapshotRequestAddHeight(b, height)
	fb.SnapshotRequestAddAfter(b, a)
	b.Finish(fb.SnapshotRequestEnd(b))
	r, err := c.Snapshot(ctx, b)
	if err != nil {
		return txlog.SnapshotPage{}, FromStatus(to, err)
	}
	pg := txlog.SnapshotPage{Height: r.Height(), Ballot: decodeBallot(r.Ballot(nil)), ConfigAt: r.ConfigAt(), More: r.More()}
	if pg.Hash, err = decodeHash("snapshot hash", r.HashBytes()); err != nil {
		return txlog.SnapshotPage{}, err
	}
	for i := range r.ConfigLength() {
		pg.Config = append(pg.Config, string(r.Config(i)))
	}
	if pg.Records, err = decodeRecords(r.RecordsLength(), r.Records); err != nil {
		return txlog.SnapshotPage{}, err
	}
	return pg, nil
}

// Forward runs a client's request on the host at to, which leads the
// partition.
func (t *Transport) Forward(ctx context.Context, to string, req txlog.Request) (txlog.Response, error) {
	c, err := t.client(to)
	if err != nil {
		return txlog.Response{}, err
	}
	r, err := c.Forward(ctx, EncodeRequest(req))
	if err != nil {
		return txlog.Response{}, FromStatus(to, err)
	}
	return DecodeResponse(r)
}
