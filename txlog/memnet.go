package txlog

import (
	"context"
	"fmt"
	"sync"

	"github.com/difuse/difuse/memnet"
)

// Network is an in-memory network of transaction-log services for tests.
// Calls are function calls, filtered by a memnet fault model that the
// ring's in-memory network can share.
type Network struct {
	faults *memnet.Faults
	mu     sync.Mutex
	hosts  map[string]Handler
}

// NewNetwork returns a network obeying faults.
func NewNetwork(faults *memnet.Faults) *Network {
	return &Network{faults: faults, hosts: map[string]Handler{}}
}

// Attach makes addr reach h.
func (n *Network) Attach(addr string, h Handler) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hosts[addr] = h
}

// Transport returns the transport of the host at from.
func (n *Network) Transport(from string) Transport { return memTransport{n: n, from: from} }

func (n *Network) deliver(from, to string) (Handler, error) {
	if err := n.faults.Check(from, to); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	h, ok := n.hosts[to]
	if !ok {
		return nil, fmt.Errorf("%w: no host at %s", memnet.ErrUnreachable, to)
	}
	return h, nil
}

type memTransport struct {
	n    *Network
	from string
}

// call delivers a call and checks the fault model again for the reply, so
// a host killed or cut off during the call loses the reply too.
func call[T any](t memTransport, to string, fn func(Handler) (T, error)) (T, error) {
	var zero T
	h, err := t.n.deliver(t.from, to)
	if err != nil {
		return zero, err
	}
	out, err := fn(h)
	if cerr := t.n.faults.Check(to, t.from); cerr != nil {
		return zero, cerr
	}
	return out, err
}

func (t memTransport) Prepare(_ context.Context, to, partition string, b Ballot) (PrepareReply, error) {
	return call(t, to, func(h Handler) (PrepareReply, error) { return h.HandlePrepare(partition, b) })
}

func (t memTransport) Append(_ context.Context, to string, req AppendRequest) (AppendReply, error) {
	return call(t, to, func(h Handler) (AppendReply, error) { return h.HandleAppend(req) })
}

func (t memTransport) Fetch(_ context.Context, to, partition string, from uint64, limit int) ([]*Tx, error) {
	return call(t, to, func(h Handler) ([]*Tx, error) { return h.HandleFetch(partition, from, limit) })
}

func (t memTransport) ReadLocal(_ context.Context, to, partition, name string) (Record, error) {
	return call(t, to, func(h Handler) (Record, error) { return h.HandleReadLocal(partition, name) })
}

func (t memTransport) Forward(ctx context.Context, to string, req Request) (Response, error) {
	return call(t, to, func(h Handler) (Response, error) { return h.HandleForward(ctx, req) })
}
