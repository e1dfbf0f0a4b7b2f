package jepsen

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// network puts each node in a network namespace of its own, joined to the
// root namespace by a veth pair on one bridge, so that the harness (in the
// root namespace) reaches every node and partitions can cut nodes off from
// each other: a partition adds blackhole routes, in each node's namespace,
// to the nodes it must not reach. Packets are dropped, as on a real
// network, so calls time out rather than fail at once.
type network struct {
	prefix string // of every name made, unique per run
	bridge string
	nodes  []netip.Addr
	// cut holds the blackholes in force: cut[i][j] means i cannot reach j.
	cut map[[2]int]bool
}

// subnetFor returns the private range a run's bridge and namespaces use:
// 10.231.x.0/24 with x from the run's number, so that runs side by side
// do not collide.
func subnetFor(run int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 231, byte(run%254 + 1), 0}), 24)
}

// ip runs the ip(8) command.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// prefixFor returns the prefix of the names run number run makes.
func prefixFor(run int) string { return fmt.Sprintf("dj%x", run&0xffff) }

// newNetwork makes n namespaces for run number run, on one bridge.
func newNetwork(run int, n int) (*network, error) {
	w := &network{prefix: prefixFor(run), cut: map[[2]int]bool{}}
	w.bridge = w.prefix + "br"
	gw := subnetFor(run).Addr().Next()
	if err := ip("link", "add", w.bridge, "type", "bridge"); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"addr", "add", gw.String() + "/24", "dev", w.bridge},
		{"link", "set", w.bridge, "up"},
	}
	addr := gw
	for i := range n {
		addr = addr.Next()
		ns, host, peer := w.ns(i), fmt.Sprintf("%sh%d", w.prefix, i), fmt.Sprintf("%sn%d", w.prefix, i)
		w.nodes = append(w.nodes, addr)
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"link", "add", host, "type", "veth", "peer", "name", peer},
			[]string{"link", "set", peer, "netns", ns},
			[]string{"link", "set", host, "master", w.bridge},
			[]string{"link", "set", host, "up"},
			[]string{"-n", ns, "addr", "add", addr.String() + "/24", "dev", peer},
			[]string{"-n", ns, "link", "set", peer, "up"},
			[]string{"-n", ns, "link", "set", "lo", "up"},
		)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			w.close()
			return nil, err
		}
	}
	return w, nil
}

// ns returns node i's namespace.
func (w *network) ns(i int) string { return fmt.Sprintf("%s-%d", w.prefix, i) }

// partition cuts the network into groups: nodes in different groups cannot
// reach each other. Nodes in no group keep every link (a bridge).
func (w *network) partition(groups [][]int) error {
	if err := w.heal(); err != nil {
		return err
	}
	group := map[int]int{}
	for g, members := range groups {
		for _, m := range members {
			group[m] = g
		}
	}
	for i := range w.nodes {
		for j := range w.nodes {
			gi, iok := group[i]
			gj, jok := group[j]
			if i != j && iok && jok && gi != gj {
				if err := ip("-n", w.ns(i), "route", "add", "blackhole", w.nodes[j].String()+"/32"); err != nil {
					return err
				}
				w.cut[[2]int{i, j}] = true
			}
		}
	}
	return nil
}

// heal removes every cut.
func (w *network) heal() error {
	for c := range w.cut {
		if err := ip("-n", w.ns(c[0]), "route", "del", "blackhole", w.nodes[c[1]].String()+"/32"); err != nil {
			return err
		}
		delete(w.cut, c)
	}
	return nil
}

// close removes the namespaces and the bridge (their veths go with them).
func (w *network) close() {
	for i := range w.nodes {
		ip("netns", "del", w.ns(i))
	}
	ip("link", "del", w.bridge)
}
