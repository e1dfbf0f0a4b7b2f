package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/blockstore/blockrpc"
	"github.com/difuse/difuse/level"
)

// BlockSet stores data, whose hash is h, as a block on its replica set
// at level l, through the node, which must name the block h too. Errors
// wrapping blockstore.ErrNotFound or ErrCorrupt keep that identity.
func (c *Conn) BlockSet(ctx context.Context, h blockstore.Hash, data []byte, l level.Level) error {
	stream, err := c.client.BlockPut(ctx, grpc.WaitForReady(true))
	if err != nil {
		return blockrpc.FromStatus(c.addr, err)
	}
	if err := blockrpc.SendBlock(stream.Send, blockstore.Hash{}, data, false, l); err != nil && !errors.Is(err, io.EOF) {
		return blockrpc.FromStatus(c.addr, err)
	}
	r, err := stream.CloseAndRecv()
	if err != nil {
		return blockrpc.FromStatus(c.addr, err)
	}
	named, err := blockstore.HashFromBytes(r.HashBytes())
	if err != nil {
		return fmt.Errorf("%s: %w", c.addr, err)
	}
	if named != h {
		return fmt.Errorf("%w: %s named the block %s", blockstore.ErrCorrupt, c.addr, named)
	}
	return nil
}

// BlockGet reads block h from its replica set at level l, through the
// node, and checks its hash.
func (c *Conn) BlockGet(ctx context.Context, h blockstore.Hash, l level.Level) ([]byte, error) {
	stream, err := c.client.BlockGet(ctx, blockrpc.RequestMessage(h, false, l), grpc.WaitForReady(true))
	if err != nil {
		return nil, blockrpc.FromStatus(c.addr, err)
	}
	_, data, _, err := blockrpc.ReceiveBlock(stream.Recv)
	if err != nil {
		return nil, blockrpc.FromStatus(c.addr, err)
	}
	if got := blockstore.Sum(data); got != h {
		return nil, fmt.Errorf("%w: %s sent bytes hashing to %s for %s", blockstore.ErrCorrupt, c.addr, got, h)
	}
	return data, nil
}

// BlockCheck reports, for each block, how many hosts of its replica set
// hold it (held) and how many hosts the set has (of), at most 1,024 blocks
// a call.
func (c *Conn) BlockCheck(ctx context.Context, hashes []blockstore.Hash) (held, of []int, err error) {
	r, err := c.client.BlockCheck(ctx, blockrpc.HashesMessage(hashes, false), grpc.WaitForReady(true))
	if err != nil {
		return nil, nil, blockrpc.FromStatus(c.addr, err)
	}
	if r.HeldLength() != len(hashes) || r.ReplicasLength() != len(hashes) {
		return nil, nil, fmt.Errorf("%s answered %d counts for %d blocks", c.addr, r.HeldLength(), len(hashes))
	}
	held, of = make([]int, len(hashes)), make([]int, len(hashes))
	for i := range hashes {
		held[i], of[i] = int(r.Held(i)), int(r.Replicas(i))
	}
	return held, of, nil
}
