package ring

import (
	"context"
	"fmt"

	"github.com/difuse/difuse/internal/memnet"
)

// Network is an in-memory network of hosts for tests: calls are direct
// function calls, so a test that drives every host from one goroutine is
// deterministic. Its embedded fault model can kill hosts, cut links between
// them and drop calls at random from a fixed seed.
type Network struct {
	*memnet.Faults
	hosts *memnet.Registry[Handler]
}

// NewNetwork returns an empty network with a fault model of its own.
func NewNetwork(seed uint64) *Network { return NewNetworkWith(memnet.New(seed)) }

// NewNetworkWith returns an empty network that obeys faults, which other
// in-memory transports may share.
func NewNetworkWith(faults *memnet.Faults) *Network {
	return &Network{Faults: faults, hosts: memnet.NewRegistry[Handler](faults)}
}

// Attach makes addr reach h, and brings addr up.
func (n *Network) Attach(addr string, h Handler) {
	n.hosts.Attach(addr, h)
	n.Revive(addr)
}

// Transport returns the transport the host at from uses.
func (n *Network) Transport(from string) Transport { return memTransport{n: n, from: from} }

// deliver returns the handler at to, or why the call cannot reach it. The
// reply always gets back: a call that reached its host is not lost.
func (n *Network) deliver(from, to string) (Handler, error) {
	h, err := n.hosts.Deliver(from, to)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return h, nil
}

type memTransport struct {
	n    *Network
	from string
}

func (t memTransport) VNodes(_ context.Context, addr string) ([]Ref, error) {
	h, err := t.n.deliver(t.from, addr)
	if err != nil {
		return nil, err
	}
	return h.HandleVNodes()
}

func (t memTransport) Ping(_ context.Context, to Ref) error {
	h, err := t.n.deliver(t.from, to.Addr)
	if err != nil {
		return err
	}
	return h.HandlePing(to.ID)
}

func (t memTransport) GetState(_ context.Context, to Ref) (State, error) {
	h, err := t.n.deliver(t.from, to.Addr)
	if err != nil {
		return State{}, err
	}
	return h.HandleGetState(to.ID)
}

func (t memTransport) Rectify(ctx context.Context, to Ref, from Ref) error {
	h, err := t.n.deliver(t.from, to.Addr)
	if err != nil {
		return err
	}
	return h.HandleRectify(ctx, to.ID, from)
}

func (t memTransport) Next(_ context.Context, to Ref, key ID) (NextReply, error) {
	h, err := t.n.deliver(t.from, to.Addr)
	if err != nil {
		return NextReply{}, err
	}
	return h.HandleNext(to.ID, key)
}

func (t memTransport) Leaving(ctx context.Context, to Ref, note LeaveNote) error {
	h, err := t.n.deliver(t.from, to.Addr)
	if err != nil {
		return err
	}
	return h.HandleLeaving(ctx, to.ID, note)
}
