package ring

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
)

// Network is an in-memory network of hosts for tests: calls are direct
// function calls, so a test that drives every host from one goroutine is
// deterministic. It can kill hosts, cut links between them and drop calls at
// random from a fixed seed.
type Network struct {
	mu       sync.Mutex
	hosts    map[string]Handler
	down     map[string]bool
	cut      map[[2]string]bool
	dropRate float64
	rng      *rand.Rand
	calls    int
}

// NewNetwork returns an empty network whose random drops follow seed.
func NewNetwork(seed uint64) *Network {
	return &Network{
		hosts: map[string]Handler{},
		down:  map[string]bool{},
		cut:   map[[2]string]bool{},
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
}

// Attach makes addr reach h, and brings addr up.
func (n *Network) Attach(addr string, h Handler) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hosts[addr] = h
	delete(n.down, addr)
}

// Kill makes every call to or from addr fail, as if its process died.
func (n *Network) Kill(addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.down[addr] = true
}

// Partition cuts every link between hosts of different groups. Hosts in no
// group keep their links.
func (n *Network) Partition(groups ...[]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, g := range groups {
		for _, o := range groups[i+1:] {
			for _, a := range g {
				for _, b := range o {
					n.cut[[2]string{a, b}] = true
					n.cut[[2]string{b, a}] = true
				}
			}
		}
	}
}

// Heal restores every cut link.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cut)
}

// SetDropRate makes each call fail with probability p.
func (n *Network) SetDropRate(p float64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dropRate = p
}

// Calls returns the number of calls attempted so far.
func (n *Network) Calls() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls
}

// Transport returns the transport the host at from uses.
func (n *Network) Transport(from string) Transport { return memTransport{n: n, from: from} }

// deliver returns the handler at to, or why the call cannot reach it.
func (n *Network) deliver(from, to string) (Handler, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls++
	h, ok := n.hosts[to]
	switch {
	case !ok, n.down[to], n.down[from]:
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, to)
	case n.cut[[2]string{from, to}]:
		return nil, fmt.Errorf("%w: %s cut off from %s", ErrUnreachable, to, from)
	case n.dropRate > 0 && n.rng.Float64() < n.dropRate:
		return nil, fmt.Errorf("%w: call to %s dropped", ErrUnreachable, to)
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
