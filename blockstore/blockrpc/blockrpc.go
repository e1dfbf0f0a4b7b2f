// Package blockrpc carries the block store's calls over gRPC: Transport is
// the client side of blockstore.Transport and Register serves a
// blockstore.Handler as the Blocks service. Blocks travel in pieces of at
// most PieceBytes, so neither side buffers more than the block itself.
// blockstore.ErrNotFound and blockstore.ErrCorrupt keep their identity
// across the network (as NotFound and DataLoss); any other failure is a
// transport error.
package blockrpc

import (
	"context"
	"errors"
	"fmt"
	"io"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/store"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

// PieceBytes bounds the data of one message.
const PieceBytes = 256 << 10

var errBadRequest = errors.New("bad request")

// ToStatus turns a handler's error into a gRPC status.
func ToStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, blockstore.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, blockstore.ErrCorrupt):
		return status.Error(codes.DataLoss, err.Error())
	case errors.Is(err, errBadRequest):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, store.ErrNoSpace):
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

// FromStatus turns the error of a call to addr back into the block
// store's.
func FromStatus(addr string, err error) error {
	switch status.Code(err) {
	case codes.NotFound:
		return fmt.Errorf("%s: %w: %s", addr, blockstore.ErrNotFound, status.Convert(err).Message())
	case codes.DataLoss:
		return fmt.Errorf("%s: %w: %s", addr, blockstore.ErrCorrupt, status.Convert(err).Message())
	case codes.ResourceExhausted:
		return fmt.Errorf("%s: %w: %s", addr, store.ErrNoSpace, status.Convert(err).Message())
	}
	return fmt.Errorf("blockstore: %s: %w", addr, err)
}

// Transport is blockstore.Transport over gRPC, on connections from a
// shared pool.
type Transport struct {
	pool *wire.Pool
}

// NewTransport returns a transport calling through pool; the pool's owner
// closes it.
func NewTransport(pool *wire.Pool) *Transport { return &Transport{pool: pool} }

var _ blockstore.Transport = (*Transport)(nil)

func (t *Transport) client(addr string) (fb.BlocksClient, error) {
	cc, err := t.pool.Get(addr)
	if err != nil {
		return nil, fmt.Errorf("blockstore: %s: %w", addr, err)
	}
	return fb.NewBlocksClient(cc), nil
}

// HashesMessage returns hashes as a BlockHashes message, asking a Has to
// touch the blocks with touch.
func HashesMessage(hashes []blockstore.Hash, touch bool) *flatbuffers.Builder {
	b := flatbuffers.NewBuilder(64 + 32*len(hashes))
	flat := make([]byte, 0, 32*len(hashes))
	for _, h := range hashes {
		flat = append(flat, h[:]...)
	}
	v := b.CreateByteVector(flat)
	fb.BlockHashesStart(b)
	fb.BlockHashesAddHashes(b, v)
	fb.BlockHashesAddTouch(b, touch)
	b.Finish(fb.BlockHashesEnd(b))
	return b
}

// DecodeHashes reads the hashes of a verified BlockHashes message, at most
// limit of them; its errors are bad requests.
func DecodeHashes(r *fb.BlockHashes, limit int) ([]blockstore.Hash, error) {
	flat := r.HashesBytes()
	if len(flat)%32 != 0 || len(flat) > 32*limit {
		return nil, fmt.Errorf("%w: %d bytes of hashes (whole hashes, at most %d)", errBadRequest, len(flat), limit)
	}
	hashes := make([]blockstore.Hash, len(flat)/32)
	for i := range hashes {
		copy(hashes[i][:], flat[32*i:])
	}
	return hashes, nil
}

// Has reports which of hashes the host at to holds, marking them used now
// with touch.
func (t *Transport) Has(ctx context.Context, to string, hashes []blockstore.Hash, touch bool) ([]bool, error) {
	c, err := t.client(to)
	if err != nil {
		return nil, err
	}
	r, err := c.Has(ctx, HashesMessage(hashes, touch))
	if err != nil {
		return nil, FromStatus(to, err)
	}
	if r.PresentLength() != len(hashes) {
		return nil, fmt.Errorf("blockstore: %s answered %d results for %d hashes", to, r.PresentLength(), len(hashes))
	}
	out := make([]bool, len(hashes))
	for i := range out {
		out[i] = r.Present(i)
	}
	return out, nil
}

// Put sends a block to the host at to, in pieces.
func (t *Transport) Put(ctx context.Context, to string, h blockstore.Hash, data []byte, sync bool) error {
	c, err := t.client(to)
	if err != nil {
		return err
	}
	stream, err := c.Put(ctx)
	if err != nil {
		return FromStatus(to, err)
	}
	if err := SendBlock(stream.Send, h, data, sync, 0); err != nil && !errors.Is(err, io.EOF) {
		return FromStatus(to, err) // io.EOF: the server ended the call; CloseAndRecv has its error
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return FromStatus(to, err)
	}
	return nil
}

// pieceMessage builds one BlockPiece; the first names the block.
func pieceMessage(h blockstore.Hash, size int, sync bool, l level.Level, data []byte, first bool) *flatbuffers.Builder {
	b := flatbuffers.NewBuilder(len(data) + 128)
	var hash flatbuffers.UOffsetT
	if first {
		hash = b.CreateByteVector(h[:])
	}
	d := b.CreateByteVector(data)
	fb.BlockPieceStart(b)
	if first {
		fb.BlockPieceAddHash(b, hash)
		fb.BlockPieceAddSize(b, uint64(size))
		fb.BlockPieceAddSync(b, sync)
		fb.BlockPieceAddLevel(b, fb.Level(l))
	}
	fb.BlockPieceAddData(b, d)
	b.Finish(fb.BlockPieceEnd(b))
	return b
}

// Get fetches a block from the host at to.
func (t *Transport) Get(ctx context.Context, to string, h blockstore.Hash) ([]byte, error) {
	c, err := t.client(to)
	if err != nil {
		return nil, err
	}
	stream, err := c.Get(ctx, RequestMessage(h, false, 0))
	if err != nil {
		return nil, FromStatus(to, err)
	}
	_, data, _, err := ReceiveBlock(stream.Recv)
	if err != nil {
		return nil, FromStatus(to, err)
	}
	return data, nil
}

// Delete removes a block from the host at to.
func (t *Transport) Delete(ctx context.Context, to string, h blockstore.Hash, sync bool) error {
	c, err := t.client(to)
	if err != nil {
		return err
	}
	if _, err := c.Delete(ctx, RequestMessage(h, sync, 0)); err != nil {
		return FromStatus(to, err)
	}
	return nil
}

// RequestMessage builds a BlockRequest.
func RequestMessage(h blockstore.Hash, sync bool, l level.Level) *flatbuffers.Builder {
	b := flatbuffers.NewBuilder(64)
	v := b.CreateByteVector(h[:])
	fb.BlockRequestStart(b)
	fb.BlockRequestAddHash(b, v)
	fb.BlockRequestAddSync(b, sync)
	fb.BlockRequestAddLevel(b, fb.Level(l))
	b.Finish(fb.BlockRequestEnd(b))
	return b
}

// Register serves h as the Blocks service on s.
func Register(s grpc.ServiceRegistrar, h blockstore.Handler) {
	fb.RegisterBlocksServer(s, server{h: h})
}

type server struct {
	fb.UnimplementedBlocksServer
	h blockstore.Handler
}

func (s server) Has(_ context.Context, r *fb.BlockHashes) (*flatbuffers.Builder, error) {
	hashes, err := DecodeHashes(r, 4096)
	if err != nil {
		return nil, ToStatus(err)
	}
	present, err := s.h.HandleHas(hashes, r.Touch())
	if err != nil {
		return nil, ToStatus(err)
	}
	b := flatbuffers.NewBuilder(64 + len(present))
	fb.BlockPresenceStartPresentVector(b, len(present))
	for i := len(present) - 1; i >= 0; i-- {
		b.PrependBool(present[i])
	}
	v := b.EndVector(len(present))
	fb.BlockPresenceStart(b)
	fb.BlockPresenceAddPresent(b, v)
	b.Finish(fb.BlockPresenceEnd(b))
	return b, nil
}

func (s server) Put(stream fb.Blocks_PutServer) error {
	h, data, sync, err := ReceiveBlock(stream.Recv)
	if err != nil {
		return ToStatus(err)
	}
	if err := s.h.HandlePut(h, data, sync); err != nil {
		return ToStatus(err)
	}
	b := flatbuffers.NewBuilder(16)
	fb.BlockAckStart(b)
	b.Finish(fb.BlockAckEnd(b))
	return stream.SendAndClose(b)
}

// ReceiveBlock reads a block sent in pieces by SendBlock: it returns the
// hash and sync flag the first piece named and the bytes, checking that
// they are as many as announced (at most blockstore.MaxBlockBytes). Its
// errors on bad input wrap an error that ToStatus turns into
// InvalidArgument.
func ReceiveBlock(recv func() (*fb.BlockPiece, error)) (blockstore.Hash, []byte, bool, error) {
	var h blockstore.Hash
	var buf []byte
	var sync bool
	var want uint64 // the size the first piece announced
	for first := true; ; first = false {
		p, err := recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return h, nil, false, err
		}
		if first {
			if hb := p.HashBytes(); hb != nil {
				if h, err = blockstore.HashFromBytes(hb); err != nil {
					return h, nil, false, fmt.Errorf("%w: %w", errBadRequest, err)
				}
			}
			if p.Size() > blockstore.MaxBlockBytes {
				return h, nil, false, fmt.Errorf("%w: a block of %d bytes (at most %d)", errBadRequest, p.Size(), blockstore.MaxBlockBytes)
			}
			// The buffer grows with the bytes received, not with the size
			// announced: a small message cannot make it large.
			want, sync = p.Size(), p.Sync()
			buf = make([]byte, 0, min(int(want), p.DataLength()))
		}
		if uint64(len(buf)+p.DataLength()) > want {
			return h, nil, false, fmt.Errorf("%w: more than the %d bytes announced", errBadRequest, want)
		}
		buf = append(buf, p.DataBytes()...)
	}
	if buf == nil || uint64(len(buf)) != want {
		return h, nil, false, fmt.Errorf("%w: %d of the %d bytes announced", errBadRequest, len(buf), want)
	}
	return h, buf, sync, nil
}

// SendBlock sends a block in pieces of at most PieceBytes; the first names
// the hash, the size, the sync flag and the level (which only a client's
// BlockPut reads).
func SendBlock(send func(*flatbuffers.Builder) error, h blockstore.Hash, data []byte, sync bool, l level.Level) error {
	for off := 0; off == 0 || off < len(data); off += PieceBytes {
		if err := send(pieceMessage(h, len(data), sync, l, data[off:min(off+PieceBytes, len(data))], off == 0)); err != nil {
			return err
		}
	}
	return nil
}

func (s server) Get(r *fb.BlockRequest, stream fb.Blocks_GetServer) error {
	h, err := blockstore.HashFromBytes(r.HashBytes())
	if err != nil {
		return ToStatus(fmt.Errorf("%w: %w", errBadRequest, err))
	}
	data, err := s.h.HandleGet(h)
	if err != nil {
		return ToStatus(err)
	}
	return SendBlock(stream.Send, h, data, false, 0)
}

func (s server) Delete(_ context.Context, r *fb.BlockRequest) (*flatbuffers.Builder, error) {
	h, err := blockstore.HashFromBytes(r.HashBytes())
	if err != nil {
		return nil, ToStatus(fmt.Errorf("%w: %w", errBadRequest, err))
	}
	if err := s.h.HandleDelete(h, r.Sync()); err != nil {
		return nil, ToStatus(err)
	}
	b := flatbuffers.NewBuilder(16)
	fb.BlockAckStart(b)
	b.Finish(fb.BlockAckEnd(b))
	return b, nil
}
