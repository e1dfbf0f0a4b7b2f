package ring

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Config configures a Host. Zero values pick the defaults given beside each
// field.
type Config struct {
	// Addr is the address other hosts reach this host at. Required.
	Addr string
	// VNodes is the number of virtual nodes the host runs. Default 8.
	VNodes int
	// Replicas is N, the size of a key's replica set: odd. Default 3.
	Replicas int
	// MinSuccessors is r, the shortest successor list a vnode keeps while
	// the ring has more members. Default Replicas+1; at least Replicas+1.
	// A new ring needs at least r+1 vnodes, so VNodes must exceed it.
	MinSuccessors int
	// SuccessorHosts is how many hosts other than its own a successor list
	// extends to cover, so that losing fewer hosts than this at once never
	// empties a list. Default Replicas+1.
	SuccessorHosts int
	// MaxSuccessors caps the length of a successor list. Default
	// 4*VNodes, at least MinSuccessors.
	MaxSuccessors int
	// TickInterval is the period of the maintenance that Run drives.
	// Default 500ms.
	TickInterval time.Duration
	// CallTimeout bounds every call to another host; a vnode that does not
	// answer within it is taken for dead. Default 1s.
	CallTimeout time.Duration
	// OnChange, if set, is called after a vnode's predecessor or successor
	// list changes, outside the host's locks, on the goroutine that made the
	// change. It must not block for long.
	OnChange func(Change)
	// Logger receives state transitions; nil discards them.
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.Addr == "" {
		return errors.New("ring: Config.Addr is required")
	}
	if c.VNodes == 0 {
		c.VNodes = 8
	}
	if c.Replicas == 0 {
		c.Replicas = 3
	}
	if c.MinSuccessors == 0 {
		c.MinSuccessors = c.Replicas + 1
	}
	if c.SuccessorHosts == 0 {
		c.SuccessorHosts = c.Replicas + 1
	}
	if c.MaxSuccessors == 0 {
		c.MaxSuccessors = max(4*c.VNodes, c.MinSuccessors)
	}
	if c.TickInterval == 0 {
		c.TickInterval = 500 * time.Millisecond
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.VNodes < 1 || c.VNodes > MaxVNodes:
		return fmt.Errorf("ring: VNodes %d must be from 1 to %d", c.VNodes, MaxVNodes)
	case c.Replicas < 1 || c.Replicas%2 == 0:
		return fmt.Errorf("ring: Replicas %d must be odd and positive (a majority of an even set tolerates no more failures than of the odd set one smaller)", c.Replicas)
	case c.MinSuccessors < c.Replicas+1:
		return fmt.Errorf("ring: MinSuccessors %d must be at least Replicas+1 = %d", c.MinSuccessors, c.Replicas+1)
	case c.MaxSuccessors < c.MinSuccessors:
		return fmt.Errorf("ring: MaxSuccessors %d is below MinSuccessors %d", c.MaxSuccessors, c.MinSuccessors)
	case c.MaxSuccessors > MaxRefs:
		return fmt.Errorf("ring: MaxSuccessors %d is above %d", c.MaxSuccessors, MaxRefs)
	case c.TickInterval < 0 || c.CallTimeout < 0:
		return errors.New("ring: negative TickInterval or CallTimeout")
	}
	return nil
}

// MaxVNodes bounds the virtual nodes one host runs.
const MaxVNodes = 1024

// MaxRefs bounds the vnode lists hosts exchange (a host's vnodes, a
// successor list); a longer one from the network is refused.
const MaxRefs = 4 * MaxVNodes

// Change reports a vnode's new predecessor and successor list.
type Change struct {
	VNode Ref
	Pred  Ref
	Succs []Ref
}

// vnode is the state of one virtual node. It is guarded by Host.mu.
type vnode struct {
	self    Ref
	pred    Ref
	succs   []Ref
	fingers [IDBits]Ref
	// fingerBase is the lowest finger kept: lower ones fall inside the
	// successor list. nextFinger is the one fix-fingers refreshes next.
	fingerBase, nextFinger int
	// predHeard is the round in which pred last rectified this vnode.
	predHeard int
}

// Host runs the virtual nodes of one process and maintains their place in
// the ring. Its methods are safe for concurrent use. Tick (or Run) drives
// maintenance; tests call Tick themselves to control time.
type Host struct {
	cfg Config
	tr  Transport
	log *slog.Logger

	mu     sync.Mutex
	vnodes map[ID]*vnode
	order  []ID // own vnode ids, ascending
	// ticks counts maintenance rounds: the ring's clock.
	ticks int
	// failed maps the address of a host that a call could not reach to the
	// round it failed in. Successor lists and replica sets skip such hosts
	// for suspectTicks rounds, or until the host is heard from again.
	failed map[string]int
	// seen holds every other host this one has reached: after a partition
	// heals, the merge check looks for them outside the ring.
	seen map[string]bool
	// left maps the address of a host whose vnode said it was leaving to
	// when it said so.
	left map[string]time.Time
	// mergeNext counts merge checks, to take hosts and vnodes in turn.
	mergeNext int
}

// mergeEvery is how many rounds pass between two merge checks.
const mergeEvery = 4

// suspectTicks is how many rounds a host that could not be reached is left
// out of successor lists and replica sets, unless it is heard from sooner.
const suspectTicks = 8

// New returns a host that is not yet a member of any ring: call Create or
// Join. tr carries calls to other hosts; calls to the host's own vnodes
// skip it.
func New(cfg Config, tr Transport) (*Host, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Host{cfg: cfg, tr: tr, log: cfg.Logger, vnodes: map[ID]*vnode{}, failed: map[string]int{}, seen: map[string]bool{}, left: map[string]time.Time{}}, nil
}

// Config returns the host's configuration with defaults filled in.
func (h *Host) Config() Config { return h.cfg }

// Addr returns the host's address.
func (h *Host) Addr() string { return h.cfg.Addr }

// OwnRefs returns the refs of the host's vnodes, ascending, whether or not
// it is a member yet.
func (h *Host) OwnRefs() []Ref {
	refs := make([]Ref, h.cfg.VNodes)
	for i := range refs {
		refs[i] = Ref{ID: VNodeID(h.cfg.Addr, i), Addr: h.cfg.Addr}
	}
	slices.SortFunc(refs, func(a, b Ref) int { return a.ID.Cmp(b.ID) })
	return refs
}

// Member reports whether the host has joined or created a ring.
func (h *Host) Member() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.vnodes) > 0
}

// Create starts a new ring made of this host's vnodes alone. The ring
// needs at least MinSuccessors+1 members, so VNodes must exceed
// MinSuccessors.
func (h *Host) Create() error {
	if h.cfg.VNodes < h.cfg.MinSuccessors+1 {
		return fmt.Errorf("ring: a new ring needs at least %d vnodes (MinSuccessors+1); this host has %d",
			h.cfg.MinSuccessors+1, h.cfg.VNodes)
	}
	refs := h.OwnRefs()
	vnodes := make([]*vnode, len(refs))
	for i, r := range refs {
		vnodes[i] = &vnode{self: r, pred: refs[(i+len(refs)-1)%len(refs)]}
		vnodes[i].succs = h.trim(r, append(slices.Clone(refs[i+1:]), refs[:i]...))
	}
	h.mu.Lock()
	if len(h.vnodes) > 0 {
		h.mu.Unlock()
		return errors.New("ring: host is already a member")
	}
	var changes []Change
	for _, v := range vnodes {
		r := v.self
		h.vnodes[r.ID] = v
		h.order = append(h.order, r.ID)
		changes = append(changes, v.change())
	}
	h.mu.Unlock()
	h.log.Info("created a new ring", "vnodes", len(refs))
	h.notify(changes)
	return nil
}

// Join adds the host's vnodes to the ring that the host at seed belongs
// to. Each vnode looks up its successor through the seed, copies the
// successor's list, and becomes a member with no predecessor; stabilisation
// then links it in.
func (h *Host) Join(ctx context.Context, seed string) error {
	if h.Member() {
		return errors.New("ring: host is already a member")
	}
	cctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
	starts, err := h.transport(seed).VNodes(cctx, seed)
	cancel()
	if err != nil {
		return fmt.Errorf("ring: join via %s: %w", seed, err)
	}
	if len(starts) == 0 {
		return fmt.Errorf("ring: join via %s: %w", seed, ErrNotMember)
	}
	// Every vnode finds its place before any is installed, so that a join
	// that fails half way leaves the host out of the ring, free to retry.
	var joined []*vnode
	for _, self := range h.OwnRefs() {
		v, err := h.joinVNode(ctx, self, starts)
		if err != nil {
			return fmt.Errorf("ring: join via %s: vnode %s: %w", seed, self, err)
		}
		joined = append(joined, v)
	}
	changes := make([]Change, len(joined))
	h.mu.Lock()
	if len(h.vnodes) > 0 {
		h.mu.Unlock()
		return errors.New("ring: host is already a member")
	}
	for i, v := range joined {
		h.vnodes[v.self.ID] = v
		h.order = append(h.order, v.self.ID)
		changes[i] = v.change()
	}
	slices.SortFunc(h.order, func(a, b ID) int { return a.Cmp(b) })
	h.mu.Unlock()
	h.notify(changes)
	// One round of maintenance at once: each new vnode rectifies its
	// successor, so its predecessor adopts it at its next stabilisation.
	h.Tick(ctx)
	h.log.Info("joined the ring", "via", seed, "vnodes", h.cfg.VNodes)
	return nil
}

// joinVNode finds the place of vnode self through starts and returns it
// with its successor list, not yet installed.
//
// A host restarted on its old address finds its old vnodes (same ids)
// still listed by others for a while. Entries at its own address are
// skipped. And when the lookup of self dead-ends (the path to self runs
// through an old vnode of this host, which no longer answers), the host
// looks up its own vnodes that precede self instead, nearest first: the
// list found for one of them runs on past self to live vnodes.
func (h *Host) joinVNode(ctx context.Context, self Ref, starts []Ref) (*vnode, error) {
	keys := []ID{self.ID}
	own := h.OwnRefs()
	i := slices.IndexFunc(own, func(r Ref) bool { return r.ID == self.ID })
	for j := 1; j < len(own); j++ {
		keys = append(keys, own[(i-j+len(own))%len(own)].ID)
	}
	lastErr := fmt.Errorf("%w: no live successor for %s", ErrLookup, self.ID.Short())
	for _, key := range keys {
		succs, _, err := h.findSuccessor(ctx, starts, key)
		if err != nil {
			lastErr = err
			continue
		}
		// Keep what lies clockwise after self, counting from key.
		if key != self.ID {
			cut := slices.IndexFunc(succs, func(r Ref) bool { return r.ID != key && !betweenRight(key, r.ID, self.ID) })
			if cut < 0 {
				continue // the list ends before self
			}
			succs = succs[cut:]
		}
		for _, s := range succs {
			if s.Addr == h.cfg.Addr {
				continue // our own old incarnation, or ourselves
			}
			st, err := h.getState(ctx, s)
			if err != nil {
				continue // dead: try the next successor
			}
			return &vnode{self: self, succs: h.trim(self, append([]Ref{s}, st.Succs...))}, nil
		}
	}
	return nil, lastErr
}

// Leave takes the host's vnodes out of the ring gracefully: each tells its
// predecessor and first successor, handing over its successor list and
// predecessor, then stops answering. The host can Join again afterwards.
func (h *Host) Leave(ctx context.Context) {
	for _, id := range h.ids() {
		h.mu.Lock()
		v, ok := h.vnodes[id]
		if !ok {
			h.mu.Unlock()
			continue
		}
		note := LeaveNote{Leaving: v.self, Pred: v.pred, Succs: slices.Clone(v.succs)}
		h.mu.Unlock()
		for _, to := range []Ref{note.Pred, firstOf(note.Succs)} {
			if !to.IsZero() && to.ID != id {
				if err := h.call(ctx, to, func(ctx context.Context, t Transport) error { return t.Leaving(ctx, to, note) }); err != nil {
					h.log.Debug("leave notice not delivered", "vnode", v.self, "to", to, "err", err)
				}
			}
		}
		h.mu.Lock()
		delete(h.vnodes, id)
		h.order = slices.DeleteFunc(h.order, func(x ID) bool { return x == id })
		h.mu.Unlock()
	}
	h.log.Info("left the ring")
}

func firstOf(refs []Ref) Ref {
	if len(refs) == 0 {
		return Ref{}
	}
	return refs[0]
}

// ids returns the host's vnode ids in ascending order.
func (h *Host) ids() []ID {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.order)
}

// transport returns the way to reach addr: in process for this host.
func (h *Host) transport(addr string) Transport {
	if addr == h.cfg.Addr {
		return local{h}
	}
	return h.tr
}

// call runs fn against to's host with the call timeout, and notes whether
// the host could be reached.
func (h *Host) call(ctx context.Context, to Ref, fn func(context.Context, Transport) error) error {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
	defer cancel()
	err := fn(ctx, h.transport(to.Addr))
	if to.Addr != h.cfg.Addr {
		h.heard(to.Addr, !errors.Is(err, ErrUnreachable))
	}
	return err
}

// heard records whether the host at addr was just reached.
func (h *Host) heard(addr string, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ok {
		delete(h.failed, addr)
		h.seen[addr] = true
	} else {
		h.failed[addr] = h.ticks
	}
}

// LeftAt returns when a vnode of the host at addr last told this host it
// was leaving the ring gracefully, or the zero time if none has.
func (h *Host) LeftAt(addr string) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.left[addr]
}

// Remember adds hosts known from elsewhere (a node's remembered peers) to
// those the merge check looks for outside the ring, so that rings formed
// apart, as after a whole-cluster restart, find each other.
func (h *Host) Remember(addrs ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range addrs {
		if a != h.cfg.Addr {
			h.seen[a] = true
		}
	}
}

// suspects returns the hosts that could not be reached in the last
// suspectTicks rounds.
func (h *Host) suspects() map[string]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]bool{}
	for addr, t := range h.failed {
		if h.ticks-t < suspectTicks {
			out[addr] = true
		}
	}
	return out
}

func (h *Host) getState(ctx context.Context, to Ref) (State, error) {
	var st State
	err := h.call(ctx, to, func(ctx context.Context, t Transport) (err error) {
		st, err = t.GetState(ctx, to)
		return err
	})
	return st, err
}

func (h *Host) ping(ctx context.Context, to Ref) error {
	return h.call(ctx, to, func(ctx context.Context, t Transport) error { return t.Ping(ctx, to) })
}

// trim turns a candidate successor list for self into a valid one: entries
// strictly increasing clockwise from self, no duplicates, never self, at
// least MinSuccessors long where the ring allows, extended until it covers
// SuccessorHosts hosts other than self's, and at most MaxSuccessors long.
// Entries on hosts that could not be reached lately are left out, unless
// that would leave nothing.
func (h *Host) trim(self Ref, cands []Ref) []Ref {
	if out := h.trimSkipping(self, cands, h.suspects()); len(out) > 0 {
		return out
	}
	return h.trimSkipping(self, cands, nil)
}

func (h *Host) trimSkipping(self Ref, cands []Ref, skip map[string]bool) []Ref {
	out := make([]Ref, 0, min(len(cands), h.cfg.MaxSuccessors))
	hosts := map[string]bool{}
	prev := self.ID
	for _, c := range cands {
		if c.IsZero() || !between(prev, c.ID, self.ID) {
			break // wrapped around to self, or out of order
		}
		if skip[c.Addr] {
			continue
		}
		out = append(out, c)
		prev = c.ID
		if c.Addr != self.Addr {
			hosts[c.Addr] = true
		}
		if len(out) >= h.cfg.MaxSuccessors || (len(out) >= h.cfg.MinSuccessors && len(hosts) >= h.cfg.SuccessorHosts) {
			break
		}
	}
	return out
}

func (v *vnode) change() Change {
	return Change{VNode: v.self, Pred: v.pred, Succs: slices.Clone(v.succs)}
}

// notify reports changes to the OnChange callback.
func (h *Host) notify(changes []Change) {
	for _, c := range changes {
		h.log.Debug("vnode neighbours changed", "vnode", c.VNode, "pred", c.Pred, "succ", firstOf(c.Succs), "succs", len(c.Succs))
		if h.cfg.OnChange != nil {
			h.cfg.OnChange(c)
		}
	}
}

// Run drives maintenance every TickInterval until ctx is done.
func (h *Host) Run(ctx context.Context) {
	t := time.NewTicker(h.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.Tick(ctx)
		}
	}
}
