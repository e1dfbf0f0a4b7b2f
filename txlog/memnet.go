package txlog

import (
	"context"

	"github.com/difuse/difuse/internal/memnet"
)

// Network is an in-memory network of transaction-log services for tests.
// Calls are function calls, filtered by a memnet fault model that the
// ring's in-memory network can share.
type Network struct {
	*memnet.Registry[Handler] // Attach makes an address reach a handler
}

// NewNetwork returns a network obeying faults.
func NewNetwork(faults *memnet.Faults) *Network {
	return &Network{memnet.NewRegistry[Handler](faults)}
}

// Transport returns the transport of the host at from.
func (n *Network) Transport(from string) Transport { return memTransport{n.From(from)} }

type memTransport struct{ memnet.Endpoint[Handler] }

func call[T any](t memTransport, to string, fn func(Handler) (T, error)) (T, error) {
	return memnet.Send(t.Endpoint, to, fn)
}

func (t memTransport) Prepare(_ context.Context, to, partition string, b Ballot) (PrepareReply, error) {
	return call(t, to, func(h Handler) (PrepareReply, error) { return h.HandlePrepare(partition, b) })
}

func (t memTransport) Append(ctx context.Context, to string, req AppendRequest) (AppendReply, error) {
	return call(t, to, func(h Handler) (AppendReply, error) { return h.HandleAppend(ctx, req) })
}

func (t memTransport) Fetch(_ context.Context, to, partition string, from uint64, limit int) ([]*Tx, error) {
	return call(t, to, func(h Handler) ([]*Tx, error) { return h.HandleFetch(partition, from, limit) })
}

func (t memTransport) ReadLocal(_ context.Context, to, partition, name string) (Record, error) {
	return call(t, to, func(h Handler) (Record, error) { return h.HandleReadLocal(partition, name) })
}

func (t memTransport) Snapshot(_ context.Context, to, partition string, height uint64, after string) (SnapshotPage, error) {
	return call(t, to, func(h Handler) (SnapshotPage, error) { return h.HandleSnapshot(partition, height, after) })
}

func (t memTransport) Forward(ctx context.Context, to string, req Request) (Response, error) {
	return call(t, to, func(h Handler) (Response, error) { return h.HandleForward(ctx, req) })
}
