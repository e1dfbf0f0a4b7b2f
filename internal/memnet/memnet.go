// Package memnet is the fault model of the in-memory networks that tests
// use in place of gRPC: hosts named by address can be killed, links between
// groups of hosts cut, and a fraction of calls dropped from a seeded random
// source. One Faults value can serve several in-memory transports (the
// ring's and the transaction log's), so a killed host is dead to all of
// them.
package memnet

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
)

// ErrUnreachable is returned by Check for a call that cannot be delivered.
var ErrUnreachable = errors.New("host unreachable")

// Faults decides which calls get through. It is safe for concurrent use.
type Faults struct {
	mu       sync.Mutex
	down     map[string]bool
	cut      map[[2]string]bool
	dropRate float64
	rng      *rand.Rand
	calls    int
}

// New returns a fault model with every host up, no cut links and no drops,
// whose random drops follow seed.
func New(seed uint64) *Faults {
	return &Faults{
		down: map[string]bool{},
		cut:  map[[2]string]bool{},
		rng:  rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
}

// Kill makes every call to or from addr fail, as if its process died.
func (f *Faults) Kill(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down[addr] = true
}

// Revive brings addr back.
func (f *Faults) Revive(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.down, addr)
}

// Down reports whether addr is killed.
func (f *Faults) Down(addr string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.down[addr]
}

// Partition cuts every link between hosts of different groups. Hosts in no
// group keep their links.
func (f *Faults) Partition(groups ...[]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, g := range groups {
		for _, o := range groups[i+1:] {
			for _, a := range g {
				for _, b := range o {
					f.cut[[2]string{a, b}] = true
					f.cut[[2]string{b, a}] = true
				}
			}
		}
	}
}

// Heal restores every cut link.
func (f *Faults) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.cut)
}

// SetDropRate makes each call fail with probability p.
func (f *Faults) SetDropRate(p float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dropRate = p
}

// Calls returns the number of calls checked so far.
func (f *Faults) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// Check decides whether a call from one host to another gets through. Its
// error wraps ErrUnreachable.
func (f *Faults) Check(from, to string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	switch {
	case f.down[to], f.down[from]:
		return fmt.Errorf("%w: %s", ErrUnreachable, to)
	case f.cut[[2]string{from, to}]:
		return fmt.Errorf("%w: %s cut off from %s", ErrUnreachable, to, from)
	case f.dropRate > 0 && f.rng.Float64() < f.dropRate:
		return fmt.Errorf("%w: call to %s dropped", ErrUnreachable, to)
	}
	return nil
}
