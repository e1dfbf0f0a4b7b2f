package blockstore

import (
	"bytes"
	"context"

	"github.com/difuse/difuse/internal/memnet"
)

// Network is an in-memory network of block services for tests, obeying a
// memnet fault model that the ring's in-memory network can share. Blocks
// are copied across it, as a real network would.
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

func (t memTransport) Has(_ context.Context, to string, hashes []Hash, touch bool) ([]bool, error) {
	return call(t, to, func(h Handler) ([]bool, error) { return h.HandleHas(hashes, touch) })
}

func (t memTransport) Put(_ context.Context, to string, hash Hash, data []byte, sync bool) error {
	_, err := call(t, to, func(h Handler) (struct{}, error) { return struct{}{}, h.HandlePut(hash, bytes.Clone(data), sync) })
	return err
}

func (t memTransport) Get(_ context.Context, to string, hash Hash) ([]byte, error) {
	return call(t, to, func(h Handler) ([]byte, error) {
		b, err := h.HandleGet(hash)
		return bytes.Clone(b), err
	})
}

func (t memTransport) Delete(_ context.Context, to string, hash Hash, sync bool) error {
	_, err := call(t, to, func(h Handler) (struct{}, error) { return struct{}{}, h.HandleDelete(hash, sync) })
	return err
}
