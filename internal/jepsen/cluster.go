package jepsen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/internal/cli"
	"github.com/difuse/difuse/internal/lazyfs"
)

// Ports every node listens on, in its own namespace.
const (
	grpcPort = 4600
	httpPort = 9100
)

// node is one difused process in its namespace, with its data directory
// on a lazy disk of its own (which loses what was never synced when the
// node loses power) and a clock file giving its clock's offset.
type node struct {
	i         int
	argv      []string // the command that runs the node, in its namespace
	logPath   string
	env       []string
	disk      string // the lazy disk's backing directory
	data      string // where it is mounted: the node's data directory
	clockPath string
	mu        sync.Mutex
	cmd       *exec.Cmd
	done      chan struct{}
	paused    bool
	killed    bool       // by the harness: not to be restarted (see supervise)
	lazy      *lazyfs.FS // nil while the disk is down
	offset    time.Duration
	retired   bool // gone for good: left, or killed and replaced
}

// cluster runs the nodes: those that join during the run are added at the
// end of nodes, and those that leave stay there, retired.
type cluster struct {
	net  *network
	bin  string
	dir  string
	env  []string
	rng  *rand.Rand // of the clock offsets
	mu   sync.Mutex
	list []*node
	// admin is an admin token of the cluster for its HTTP interfaces,
	// once a node's data directory showed one (see adminToken).
	admin string
	// web is the harness's own HTTP client of the nodes (see client).
	web *http.Client
}

// adminToken returns an admin token of the cluster: every node writes one
// to its data directory; the first one found is kept, also in the run's
// directory for a person's curl. Empty until a node wrote one.
func (c *cluster) adminToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.list {
		if c.admin != "" {
			break
		}
		b, err := os.ReadFile(filepath.Join(n.data, identity.AdminTokenFile))
		if err == nil && len(b) > 0 {
			c.admin = strings.TrimSpace(string(b))
			os.WriteFile(filepath.Join(c.dir, identity.AdminTokenFile), b, 0o600)
		}
	}
	return c.admin
}

// client returns an HTTP client of its own whose requests carry the
// cluster's admin token.
func (c *cluster) client() *http.Client {
	return &http.Client{Transport: bearer{c, &http.Transport{}}}
}

// bearer adds the cluster's admin token to requests.
type bearer struct {
	c    *cluster
	next http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if tok := b.c.adminToken(); tok != "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	return b.next.RoundTrip(r)
}

// grpcAddr and httpAddr return node i's addresses.
func (c *cluster) grpcAddr(i int) string { return fmt.Sprintf("%s:%d", c.net.addr(i), grpcPort) }
func (c *cluster) httpAddr(i int) string { return fmt.Sprintf("%s:%d", c.net.addr(i), httpPort) }

// node returns node i.
func (c *cluster) node(i int) *node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.list[i]
}

// members returns the nodes that belong to the cluster: not retired.
func (c *cluster) members() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for i, n := range c.list {
		if !n.isRetired() {
			out = append(out, i)
		}
	}
	return out
}

// maxClockOffset bounds every node's clock offset from the real clock.
const maxClockOffset = 10 * time.Minute

// startCluster starts n nodes, each in a namespace of its own, the first
// creating the cluster and the others joining it, and waits until every
// node finds min(3, n) replicas for a sample of keys.
func startCluster(ctx context.Context, net *network, bin, dir string, env []string, n int, seed uint64) (*cluster, error) {
	c := &cluster{net: net, bin: bin, dir: dir, env: env, rng: rand.New(rand.NewPCG(seed, 3))}
	c.web = c.client()
	for range n {
		if _, err := c.addNode(ctx); err != nil {
			c.stop()
			return nil, err
		}
	}
	if err := c.waitSettled(ctx); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// addNode starts one more node, joining the cluster through a member
// (the first node creates it), and waits until it serves.
func (c *cluster) addNode(ctx context.Context) (int, error) {
	members := c.members()
	i, err := c.net.add()
	if err != nil {
		return 0, err
	}
	name := filepath.Join(c.dir, fmt.Sprintf("node%d", i))
	n := &node{i: i, env: c.env, logPath: name + ".log", disk: name + ".disk", data: name, clockPath: name + ".clock"}
	n.argv = []string{"ip", "netns", "exec", c.net.ns(i), filepath.Join(c.bin, "difused"),
		"-b", c.grpcAddr(i), "-a", c.httpAddr(i), "-d", n.data,
		// Compaction all the time, keeping as little as a node allows,
		// so that replicas the nemesis held back catch up through
		// snapshots; healing, hand-offs and garbage collection soon
		// enough that they happen during a run, with the clocks skewed.
		"-compact-interval", "10s", "-log-keep", "1", "-log-keep-for", "30s",
		"-heal-interval", "5s", "-heal-grace", "20s", "-gc-interval", "30s", "-gc-grace", "2m"}
	if len(members) > 0 {
		n.argv = append(n.argv, "-j", c.grpcAddr(members[c.rng.IntN(len(members))]), "-token-file", c.tokenPath())
	}
	// Each node's clock is off by up to maxClockOffset either way.
	n.env = append(slices.Clone(c.env), "DIFUSE_CLOCK_OFFSET_FILE="+n.clockPath)
	if err := n.setClock(time.Duration(c.rng.Int64N(int64(2*maxClockOffset))) - maxClockOffset); err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.list = append(c.list, n)
	c.mu.Unlock()
	if err := n.start(); err != nil {
		return 0, err
	}
	if err := c.waitServing(ctx, i); err != nil {
		return 0, err
	}
	if len(members) == 0 {
		// The first node made the cluster and its join token; the token
		// is kept apart from the node, which may be replaced.
		b, err := os.ReadFile(filepath.Join(n.data, identity.TokenFile))
		if err != nil {
			return 0, fmt.Errorf("the first node's join token: %w", err)
		}
		if err := os.WriteFile(c.tokenPath(), b, 0o600); err != nil {
			return 0, err
		}
	}
	return i, nil
}

// tokenPath is where the harness keeps the cluster's join token, for the
// nodes that join and the mounts.
func (c *cluster) tokenPath() string { return filepath.Join(c.dir, identity.TokenFile) }

// setClock sets the node's clock offset, which it reads from its clock
// file within a tenth of a second.
func (n *node) setClock(d time.Duration) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.offset = d
	tmp := n.clockPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(d.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, n.clockPath)
}

// clock returns the node's clock offset.
func (n *node) clock() time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.offset
}

// start brings the node's disk up if it is down, and runs its process.
func (n *node) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.lazy == nil {
		for _, d := range []string{n.disk, n.data} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		lazy, err := lazyfs.Mount(n.disk, n.data)
		if err != nil {
			return fmt.Errorf("node %d's disk: %w", n.i, err)
		}
		n.lazy = lazy
	}
	return n.run()
}

// run starts the node's process and its supervisor. n.mu must be held.
func (n *node) run() error {
	cmd, log, err := n.spawn()
	if err != nil {
		return err
	}
	done := make(chan struct{})
	n.cmd, n.done, n.paused, n.killed = cmd, done, false, false
	go n.supervise(cmd, log, done)
	return nil
}

// spawn runs the node's process, its output appended to its log (which
// the caller closes once the process ended).
func (n *node) spawn() (*exec.Cmd, *os.File, error) {
	log, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(n.argv[0], n.argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), n.env...)
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, nil, fmt.Errorf("node %d: %w", n.i, err)
	}
	return cmd, log, nil
}

// supervise waits for the node's process to end and closes done then,
// unless it ended because it found no cluster to join (a node that never
// became a member, restarted while the cluster itself restarts): that one
// it starts again a second later, as systemd's Restart=on-failure in the
// shipped unit does.
func (n *node) supervise(cmd *exec.Cmd, log *os.File, done chan struct{}) {
	defer close(done)
	for {
		cmd.Wait()
		log.Close()
		if cmd.ProcessState.ExitCode() != cli.ExitJoin {
			return
		}
		time.Sleep(time.Second)
		n.mu.Lock()
		if n.killed {
			n.mu.Unlock()
			return
		}
		var err error
		if cmd, log, err = n.spawn(); err != nil {
			n.mu.Unlock()
			return
		}
		n.cmd = cmd
		n.mu.Unlock()
	}
}

// isRetired reports whether the node is gone for good.
func (n *node) isRetired() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.retired
}

// retire marks the node gone for good.
func (n *node) retire() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.retired = true
}

// powerLoss kills the node and loses whatever its disk holds unsynced.
func (n *node) powerLoss() error {
	n.kill()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.lazy == nil {
		return nil
	}
	err := n.lazy.Crash()
	n.lazy = nil
	return err
}

// shutdown takes the node's disk down cleanly, or as a crash if it cannot
// (the node's process must be dead: it may hold the disk).
func (n *node) shutdown() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.lazy == nil {
		return
	}
	if n.lazy.Unmount() != nil {
		n.lazy.Crash()
	}
	n.lazy = nil
}

// procState says what the node's process is and where it waits, from
// /proc: a process that never logged may still be "ip netns exec".
func (n *node) procState() string {
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return "no process"
	}
	dir := fmt.Sprintf("/proc/%d/", cmd.Process.Pid)
	comm, _ := os.ReadFile(dir + "comm")
	wchan, _ := os.ReadFile(dir + "wchan")
	stat, _ := os.ReadFile(dir + "stat")
	state := ""
	if f := strings.Fields(string(stat)); len(f) > 2 {
		state = f[2]
	}
	return fmt.Sprintf("pid %d %s, state %s, waiting in %s", cmd.Process.Pid, strings.TrimSpace(string(comm)), state, wchan)
}

// running reports whether the node's process is alive.
func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// kill ends the node's process with SIGKILL and waits for it.
func (n *node) kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.killed = true
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGCONT) // a paused process dies just as well, but say so
	cmd.Process.Kill()
	<-done
}

// signal sends sig to the node's process, if it runs.
func (n *node) signal(sig syscall.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		n.cmd.Process.Signal(sig)
		n.paused = sig == syscall.SIGSTOP
	}
}

// stop kills every node, then takes their disks down: every node's mount
// namespace holds a copy of the disks mounted before it started.
func (c *cluster) stop() {
	c.mu.Lock()
	list := slices.Clone(c.list)
	c.mu.Unlock()
	for _, n := range list {
		n.kill()
	}
	for _, n := range list {
		n.shutdown()
	}
}

// errLeaveRefused marks a leave that the node refused: it stays a member.
// A node refuses when its ring would keep too few nodes, as while the ring
// re-forms after a power cut.
var errLeaveRefused = errors.New("refused")

// leave makes member i leave the cluster for good (it hands off what it
// holds, then stops) and retires it. A leave once begun runs to its end,
// even past the workload's.
func (c *cluster) leave(i int) error {
	n := c.node(i)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(c.bin, "difused"), "leave", "-d", n.data, "-b", c.grpcAddr(i)).CombinedOutput()
	if err != nil && ctx.Err() != nil {
		// The node took the leave and was still handing off: not a refusal.
		return fmt.Errorf("node %d leaves: still handing off after 10 minutes: %s", i, strings.TrimSpace(string(out)))
	}
	if err != nil && n.running() {
		return fmt.Errorf("node %d leaves: %w: %v: %s", i, errLeaveRefused, err, strings.TrimSpace(string(out)))
	}
	if err != nil {
		return fmt.Errorf("node %d leaves: %v: %s", i, err, out)
	}
	select {
	case <-n.exited():
	case <-time.After(time.Minute):
		return fmt.Errorf("node %d still runs a minute after it left", i)
	}
	n.retire()
	return n.powerLoss()
}

// exited returns a channel closed once the node's process has ended.
func (n *node) exited() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done == nil {
		done := make(chan struct{})
		close(done)
		return done
	}
	return n.done
}

// status returns node i's status as its HTTP interface gives it.
func (c *cluster) status(ctx context.Context, i int) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.httpAddr(i)+"/v1/status", nil)
	resp, err := c.web.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("node %d: /v1/status: %s", i, resp.Status)
	}
	var st map[string]any
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// waitServing waits until node i answers its status.
func (c *cluster) waitServing(ctx context.Context, i int) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := c.status(ctx, i); err == nil {
			return nil
		}
		if n := c.node(i); !n.running() {
			return fmt.Errorf("node %d exited; its log ends:\n%s", i, cli.Tail(n.logPath, 20))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("node %d does not answer (%s); its log ends:\n%s", i, c.node(i).procState(), cli.Tail(c.node(i).logPath, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// copiesComplete reports whether every running member answers that its
// last healing pass found no copy missing or behind.
func (c *cluster) copiesComplete() bool {
	for _, i := range c.members() {
		if !c.node(i).running() {
			continue
		}
		st, err := c.status(context.Background(), i)
		if err != nil {
			return false
		}
		h, _ := st["heal"].(map[string]any)
		passes, _ := h["passes"].(float64)
		parts, _ := h["missing_partitions"].(float64)
		blocks, _ := h["missing_blocks"].(float64)
		if passes == 0 || parts > 0 || blocks > 0 {
			return false
		}
	}
	return true
}

// errOutside says that a running member is not in the ring yet: it is
// still joining (copying its share first, which can take minutes under
// load).
var errOutside = errors.New("not in the ring yet")

// waitSettled waits until every running member places sample keys on
// min(3, running members) hosts: for 2 minutes, or 15 while a member is
// still joining.
func (c *cluster) waitSettled(ctx context.Context) error {
	start := time.Now()
	for {
		err := c.unsettled(ctx)
		if err == nil {
			return nil
		}
		limit := 2 * time.Minute
		if errors.Is(err, errOutside) {
			limit = 15 * time.Minute
		}
		if time.Since(start) > limit || ctx.Err() != nil {
			return fmt.Errorf("the ring did not settle in %s: %w", limit, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// unsettled returns why the ring has not settled yet, or nil.
func (c *cluster) unsettled(ctx context.Context) error {
	var live []int
	for _, i := range c.members() {
		if c.node(i).running() {
			live = append(live, i)
		}
	}
	for _, i := range live {
		for k := range 16 {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			req, _ := http.NewRequestWithContext(rctx, http.MethodGet, fmt.Sprintf("http://%s/v1/lookup?key=probe%d&n=3", c.httpAddr(i), k), nil)
			resp, err := c.web.Do(req)
			if err != nil {
				cancel()
				return fmt.Errorf("node %d: %w", i, err)
			}
			var res struct{ Replicas []struct{ Addr string } }
			err = json.NewDecoder(resp.Body).Decode(&res)
			resp.Body.Close()
			cancel()
			if err != nil {
				return fmt.Errorf("node %d: lookup: %w", i, err)
			}
			if len(res.Replicas) == 0 {
				return fmt.Errorf("node %d: %w", i, errOutside)
			}
			if len(res.Replicas) != min(3, len(live)) {
				return fmt.Errorf("node %d places probe%d on %v, want %d of the members %v", i, k, res.Replicas, min(3, len(live)), live)
			}
		}
	}
	return nil
}
