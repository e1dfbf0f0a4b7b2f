package jepsen

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/difuse/difuse/internal/cli"
)

// Ports every node listens on, in its own namespace.
const (
	grpcPort = 4600
	httpPort = 9100
)

// node is one difused process in its namespace.
type node struct {
	i       int
	args    []string
	logPath string
	env     []string
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	paused  bool
}

// cluster runs the nodes.
type cluster struct {
	net   *network
	nodes []*node
}

// grpcAddr and httpAddr return node i's addresses.
func (c *cluster) grpcAddr(i int) string { return fmt.Sprintf("%s:%d", c.net.nodes[i], grpcPort) }
func (c *cluster) httpAddr(i int) string { return fmt.Sprintf("%s:%d", c.net.nodes[i], httpPort) }

// startCluster starts a node in each namespace of net, the first creating
// the cluster and the others joining it, and waits until every node finds
// min(3, n) replicas for a sample of keys.
func startCluster(ctx context.Context, net *network, bin, dir string, env []string) (*cluster, error) {
	c := &cluster{net: net}
	for i := range net.nodes {
		n := &node{i: i, env: env, logPath: filepath.Join(dir, fmt.Sprintf("node%d.log", i))}
		n.args = []string{"netns", "exec", net.ns(i), filepath.Join(bin, "difused"),
			"-b", c.grpcAddr(i), "-a", c.httpAddr(i), "-d", filepath.Join(dir, fmt.Sprintf("node%d", i)),
			// Compaction all the time, keeping as little as a node allows,
			// so that replicas the nemesis held back catch up through
			// snapshots.
			"-compact-interval", "10s", "-log-keep", "1", "-log-keep-for", "30s"}
		if i > 0 {
			n.args = append(n.args, "-j", c.grpcAddr(0))
		}
		c.nodes = append(c.nodes, n)
		if err := n.start(); err != nil {
			c.stop()
			return nil, err
		}
		if err := c.waitServing(ctx, i); err != nil {
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

// start runs the node's process.
func (n *node) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	log, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", n.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), n.env...)
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("node %d: %w", n.i, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); log.Close(); close(done) }()
	n.cmd, n.done, n.paused = cmd, done, false
	return nil
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

// stop kills every node.
func (c *cluster) stop() {
	for _, n := range c.nodes {
		n.kill()
	}
}

// status returns node i's status as its HTTP interface gives it.
func (c *cluster) status(ctx context.Context, i int) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.httpAddr(i)+"/v1/status", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
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
		if !c.nodes[i].running() {
			return fmt.Errorf("node %d exited; its log ends:\n%s", i, cli.Tail(c.nodes[i].logPath, 20))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("node %d does not answer; its log ends:\n%s", i, cli.Tail(c.nodes[i].logPath, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitSettled waits until every running node places sample keys on
// min(3, running nodes) hosts.
func (c *cluster) waitSettled(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if c.settled(ctx) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the ring did not settle in 2 minutes")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *cluster) settled(ctx context.Context) bool {
	live := 0
	for _, n := range c.nodes {
		if n.running() {
			live++
		}
	}
	for i, n := range c.nodes {
		if !n.running() {
			continue
		}
		for k := range 16 {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			req, _ := http.NewRequestWithContext(rctx, http.MethodGet, fmt.Sprintf("http://%s/v1/lookup?key=probe%d&n=3", c.httpAddr(i), k), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				cancel()
				return false
			}
			var res struct{ Replicas []struct{ Addr string } }
			err = json.NewDecoder(resp.Body).Decode(&res)
			resp.Body.Close()
			cancel()
			if err != nil || len(res.Replicas) != min(3, live) {
				return false
			}
		}
	}
	return true
}
