package ring

import (
	"context"
	"encoding/json"
	"errors"
)

// Ref names a virtual node: its id and the address of the host running it.
// The zero Ref names no vnode.
type Ref struct {
	ID   ID     `json:"id"`
	Addr string `json:"addr"`
}

// IsZero reports whether r names no vnode.
func (r Ref) IsZero() bool { return r.Addr == "" }

// String returns "short-id@addr".
func (r Ref) String() string {
	if r.IsZero() {
		return "none"
	}
	return r.ID.Short() + "@" + r.Addr
}

// State is what a vnode tells others about its neighbours.
type State struct {
	Pred  Ref   // zero when the vnode has none
	Succs []Ref // successor list, nearest first
}

// NextReply answers one hop of a lookup for a key.
type NextReply struct {
	// Found says the key lies between the asked vnode and its first
	// successor; Succs is then the asked vnode's successor list, whose first
	// entry is the key's leader.
	Found bool
	Succs []Ref
	// Candidates, when not Found, are vnodes preceding the key that the
	// asked vnode knows, closest to the key first.
	Candidates []Ref
}

// LeaveNote is what a leaving vnode tells its neighbours: its predecessor
// and its successor list, so they can close the gap at once.
type LeaveNote struct {
	Leaving Ref
	Pred    Ref
	Succs   []Ref
}

// Errors of the ring.
var (
	// ErrNoVNode is returned for a call to a vnode the host does not run.
	ErrNoVNode = errors.New("ring: no such vnode on this host")
	// ErrUnreachable is returned by a transport that cannot reach a host.
	ErrUnreachable = errors.New("ring: host unreachable")
	// ErrNotMember is returned by a host that has not joined a ring yet.
	ErrNotMember = errors.New("ring: host is not a ring member")
	// ErrLookup is returned when a lookup runs out of live vnodes to ask.
	ErrLookup = errors.New("ring: lookup failed")
)

// Transport carries the ring's calls to other hosts. Every method fails
// when the host cannot be reached within ctx; a failure is how the ring
// learns that a vnode is dead. Implementations must be safe for concurrent
// use.
type Transport interface {
	// VNodes returns the vnodes the host at addr runs.
	VNodes(ctx context.Context, addr string) ([]Ref, error)
	// Ping succeeds if the vnode is alive.
	Ping(ctx context.Context, to Ref) error
	// GetState returns the vnode's predecessor and successor list.
	GetState(ctx context.Context, to Ref) (State, error)
	// Rectify tells the vnode that from may be its predecessor.
	Rectify(ctx context.Context, to Ref, from Ref) error
	// Next asks the vnode for one hop of a lookup of key.
	Next(ctx context.Context, to Ref, key ID) (NextReply, error)
	// Leaving tells a neighbour that a vnode is leaving the ring.
	Leaving(ctx context.Context, to Ref, note LeaveNote) error
}

// Handler serves the ring's calls on the receiving host; transports
// deliver to it. *Host implements it.
type Handler interface {
	HandleVNodes() ([]Ref, error)
	HandlePing(target ID) error
	HandleGetState(target ID) (State, error)
	HandleRectify(ctx context.Context, target ID, from Ref) error
	HandleNext(target ID, key ID) (NextReply, error)
	HandleLeaving(ctx context.Context, target ID, note LeaveNote) error
}

// local delivers calls to the host's own vnodes without a network hop.
type local struct{ h Handler }

func (l local) VNodes(context.Context, string) ([]Ref, error) { return l.h.HandleVNodes() }
func (l local) Ping(_ context.Context, to Ref) error          { return l.h.HandlePing(to.ID) }
func (l local) GetState(_ context.Context, to Ref) (State, error) {
	return l.h.HandleGetState(to.ID)
}
func (l local) Rectify(ctx context.Context, to Ref, from Ref) error {
	return l.h.HandleRectify(ctx, to.ID, from)
}
func (l local) Next(_ context.Context, to Ref, key ID) (NextReply, error) {
	return l.h.HandleNext(to.ID, key)
}
func (l local) Leaving(ctx context.Context, to Ref, note LeaveNote) error {
	return l.h.HandleLeaving(ctx, to.ID, note)
}

// MarshalJSON writes the zero Ref as null and others as {"id", "addr"}.
func (r Ref) MarshalJSON() ([]byte, error) {
	if r.IsZero() {
		return []byte("null"), nil
	}
	type plain Ref
	return json.Marshal(plain(r))
}
