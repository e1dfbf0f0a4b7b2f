package jepsen

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	gw     netip.Addr // the bridge's address
	mu     sync.Mutex // guards nodes, which add grows while others read
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

// newNetwork makes the bridge of run number run; add makes the nodes'
// namespaces.
func newNetwork(run int) (*network, error) {
	w := &network{prefix: prefixFor(run), cut: map[[2]int]bool{}}
	w.bridge = w.prefix + "br"
	w.gw = subnetFor(run).Addr().Next()
	for _, s := range [][]string{
		{"link", "add", w.bridge, "type", "bridge"},
		{"addr", "add", w.gw.String() + "/24", "dev", w.bridge},
		{"link", "set", w.bridge, "up"},
	} {
		if err := ip(s...); err != nil {
			w.close()
			return nil, err
		}
	}
	return w, nil
}

// add makes the namespace of one more node, with the next address, and
// returns its index.
func (w *network) add() (int, error) {
	i := w.size()
	if i >= 250 {
		return 0, fmt.Errorf("no address left for node %d", i)
	}
	addr := w.gw
	for range i + 1 {
		addr = addr.Next()
	}
	ns, host, peer := w.ns(i), fmt.Sprintf("%sh%d", w.prefix, i), fmt.Sprintf("%sn%d", w.prefix, i)
	w.mu.Lock()
	w.nodes = append(w.nodes, addr)
	w.mu.Unlock()
	for _, s := range [][]string{
		{"netns", "add", ns},
		{"link", "add", host, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", ns},
		{"link", "set", host, "master", w.bridge},
		{"link", "set", host, "up"},
		{"-n", ns, "addr", "add", addr.String() + "/24", "dev", peer},
		{"-n", ns, "link", "set", peer, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	} {
		if err := ip(s...); err != nil {
			return 0, fmt.Errorf("node %d's namespace: %w", i, err)
		}
	}
	return i, nil
}

// addr returns node i's address.
func (w *network) addr(i int) netip.Addr {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nodes[i]
}

// size returns how many nodes have namespaces.
func (w *network) size() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.nodes)
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
	for i := range w.size() {
		for j := range w.size() {
			gi, iok := group[i]
			gj, jok := group[j]
			if i != j && iok && jok && gi != gj {
				if err := ip("-n", w.ns(i), "route", "add", "blackhole", w.addr(j).String()+"/32"); err != nil {
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
		if err := ip("-n", w.ns(c[0]), "route", "del", "blackhole", w.addr(c[1]).String()+"/32"); err != nil {
			return err
		}
		delete(w.cut, c)
	}
	return nil
}

// close removes the namespaces and the bridge (their veths go with them).
func (w *network) close() { clearNetwork(w.prefix) }

// clearNetwork kills whatever runs in the namespaces whose names start with
// prefix, and deletes them and the bridge of that prefix.
func clearNetwork(prefix string) {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], prefix+"-") {
			continue
		}
		pids, _ := exec.Command("ip", "netns", "pids", f[0]).Output()
		for _, p := range strings.Fields(string(pids)) {
			if pid, err := strconv.Atoi(p); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		ip("netns", "del", f[0])
	}
	ip("link", "del", prefix+"br")
}
