package client

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/txlog"
	"github.com/difuse/difuse/txlog/txlogrpc"
)

// Txn runs a transaction-log request through the node, which forwards it
// to the partition's leader. Its errors keep their txlog identity:
// errors.Is(err, txlog.ErrConflict) and the like work on them.
func (c *Conn) Txn(ctx context.Context, req txlog.Request) (txlog.Response, error) {
	r, err := c.client.Txn(ctx, txlogrpc.EncodeRequest(req), grpc.WaitForReady(true))
	if err != nil {
		return txlog.Response{}, txlogrpc.FromStatus(c.addr, err)
	}
	return txlogrpc.DecodeResponse(r)
}

// Get reads a key of the key-value store at level. A missing key gives
// txlog.ErrNotFound.
func (c *Conn) Get(ctx context.Context, key string, level level.Level) (txlog.Record, error) {
	p, err := txlog.KVPartition(key)
	if err != nil {
		return txlog.Record{}, err
	}
	resp, err := c.Txn(ctx, txlog.Request{Partition: p, Level: level, Kind: txlog.KindRead, Name: txlog.KVRecord})
	if err == nil && !resp.Record.Exists {
		err = fmt.Errorf("%w: key %q", txlog.ErrNotFound, key)
	}
	return resp.Record, err
}

// Put sets a key at level. A non-nil ifMatch makes it a compare-and-set:
// the key's current hash must be *ifMatch, or the key must not exist if
// *ifMatch is the zero hash; otherwise it fails with txlog.ErrConflict.
func (c *Conn) Put(ctx context.Context, key string, value []byte, level level.Level, ifMatch *txlog.Hash) (txlog.TxRef, error) {
	return c.kvWrite(ctx, key, txlog.Change{Name: txlog.KVRecord, Value: value, IfMatch: ifMatch}, level)
}

// Delete deletes a key at level, under the same condition as Put's.
func (c *Conn) Delete(ctx context.Context, key string, level level.Level, ifMatch *txlog.Hash) (txlog.TxRef, error) {
	return c.kvWrite(ctx, key, txlog.Change{Name: txlog.KVRecord, Delete: true, IfMatch: ifMatch}, level)
}

func (c *Conn) kvWrite(ctx context.Context, key string, ch txlog.Change, level level.Level) (txlog.TxRef, error) {
	p, err := txlog.KVPartition(key)
	if err != nil {
		return txlog.TxRef{}, err
	}
	resp, err := c.Txn(ctx, txlog.Request{Partition: p, Level: level, Kind: txlog.KindWrite, Write: []txlog.Change{ch}})
	return resp.Tx, err
}

// History returns the transactions that changed a key, oldest first.
func (c *Conn) History(ctx context.Context, key string) ([]*txlog.Tx, error) {
	p, err := txlog.KVPartition(key)
	if err != nil {
		return nil, err
	}
	resp, err := c.Txn(ctx, txlog.Request{Partition: p, Kind: txlog.KindHistory, Name: txlog.KVRecord})
	return resp.History, err
}
