package memnet

import (
	"fmt"
	"sync"
)

// Registry is the address book of one in-memory network: it maps the
// addresses of hosts to their handlers of type H, and delivers calls among
// them through a fault model. It is safe for concurrent use.
type Registry[H any] struct {
	faults *Faults
	mu     sync.Mutex
	hosts  map[string]H
}

// NewRegistry returns an empty registry obeying faults.
func NewRegistry[H any](faults *Faults) *Registry[H] {
	return &Registry[H]{faults: faults, hosts: map[string]H{}}
}

// Attach makes addr reach h.
func (r *Registry[H]) Attach(addr string, h H) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hosts[addr] = h
}

// Deliver returns the handler at to for a call from from, if the fault
// model lets the call through; the error wraps ErrUnreachable.
func (r *Registry[H]) Deliver(from, to string) (H, error) {
	var zero H
	if err := r.faults.Check(from, to); err != nil {
		return zero, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.hosts[to]
	if !ok {
		return zero, fmt.Errorf("%w: no host at %s", ErrUnreachable, to)
	}
	return h, nil
}

// Call runs fn on the handler at to, for a call from from, if the fault
// model lets the call through; it checks the model again for the reply, so
// a host killed or cut off during the call loses the reply too.
func Call[H, T any](r *Registry[H], from, to string, fn func(H) (T, error)) (T, error) {
	var zero T
	h, err := r.Deliver(from, to)
	if err != nil {
		return zero, err
	}
	out, err := fn(h)
	if cerr := r.faults.Check(to, from); cerr != nil {
		return zero, cerr
	}
	return out, err
}

// Endpoint is one host's side of a registry: where its calls come from.
type Endpoint[H any] struct {
	r    *Registry[H]
	from string
}

// From returns the endpoint of the host at addr.
func (r *Registry[H]) From(addr string) Endpoint[H] { return Endpoint[H]{r: r, from: addr} }

// Send is Call from e's host.
func Send[H, T any](e Endpoint[H], to string, fn func(H) (T, error)) (T, error) {
	return Call(e.r, e.from, to, fn)
}
