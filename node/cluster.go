package node

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/difuse/difuse/client"
	"github.com/difuse/difuse/nodestatus"
)

// ClusterView is the cluster as one node sees it, which /v1/cluster serves
// and the status page draws: the ring's vnodes and every host's status.
type ClusterView struct {
	// Self is the gRPC address of the node that answered.
	Self     string `json:"self"`
	Replicas int    `json:"replicas"`
	// VNodes are the ring's vnodes in ring order; empty if the ring could
	// not be learned (Error says why).
	VNodes []VNodeView `json:"vnodes"`
	// Nodes are the hosts of the ring, those this node's vnodes point to,
	// and those its healing keeps track of (a host just killed, which the
	// ring soon leaves out, until its grace time ends), by address.
	Nodes []NodeView `json:"nodes"`
	Error string     `json:"error,omitempty"`
}

// VNodeView is one vnode: its ring position in hex and its host.
type VNodeView struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

// NodeView is one host: its status, or why it could not be had.
type NodeView struct {
	Addr   string             `json:"addr"`
	Up     bool               `json:"up"`
	InRing bool               `json:"in_ring"`
	Error  string             `json:"error,omitempty"`
	Status *nodestatus.Status `json:"status,omitempty"`
}

// statusTimeout bounds how long the cluster view waits for a host.
const statusTimeout = 2 * time.Second

// Cluster returns the cluster as this node sees it.
func (n *Node) Cluster(ctx context.Context) ClusterView {
	view := ClusterView{Self: n.ring.Addr(), Replicas: n.ring.Config().Replicas, VNodes: []VNodeView{}}
	inRing := map[string]bool{}
	mctx, cancel := context.WithTimeout(ctx, 5*statusTimeout)
	refs, err := n.members(mctx)
	if err == nil && mctx.Err() != nil {
		err = errors.New("timed out learning the ring: some hosts did not answer")
	}
	cancel()
	if err != nil {
		view.Error = err.Error()
	}
	for _, r := range refs {
		view.VNodes = append(view.VNodes, VNodeView{ID: r.ID.String(), Addr: r.Addr})
		inRing[r.Addr] = true
	}
	hosts := append(n.ring.KnownHosts(), n.ring.Addr())
	hosts = append(hosts, n.healer.Hosts()...)
	for a := range inRing {
		hosts = append(hosts, a)
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	view.Nodes = make([]NodeView, len(hosts))
	var wg sync.WaitGroup
	for i, addr := range hosts {
		view.Nodes[i] = NodeView{Addr: addr, InRing: inRing[addr]}
		wg.Go(func() { n.nodeStatus(ctx, &view.Nodes[i]) })
	}
	wg.Wait()
	return view
}

// nodeStatus fills in a host's status.
func (n *Node) nodeStatus(ctx context.Context, v *NodeView) {
	if v.Addr == n.ring.Addr() {
		st := n.Status()
		v.Up, v.Status = true, &st
		return
	}
	cc, err := n.pool.Get(v.Addr)
	if err != nil {
		v.Error = err.Error()
		return
	}
	sctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	st, err := client.StatusVia(sctx, cc)
	if err != nil {
		v.Error = err.Error()
		return
	}
	v.Up, v.Status = true, &st
}

func (n *Node) handleCluster(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.Cluster(r.Context()))
}
