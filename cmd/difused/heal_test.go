package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/internal/cli"
	"github.com/difuse/difuse/internal/proctest"
	"github.com/difuse/difuse/nodestatus"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/store/badgerdb"
	"github.com/difuse/difuse/txlog"
)

// healFlags make healing prompt enough for a test: a pass a second, a
// grace time of 5 s, and scrubbing of everything each pass.
var healFlags = []string{"-heal-interval", "1s", "-heal-grace", "5s", "-scrub-mib", "1024", "-join-timeout", "10s"}

// hnode is one difused of a healing test; it keeps its addresses and
// directory across restarts.
type hnode struct {
	p                *proctest.Proc
	dir, grpc, httpA string
	args             []string // of its latest start
}

// hcluster is difused processes on loopback for the healing tests.
type hcluster struct {
	t     *testing.T
	nodes []*hnode
	flags []string // after healFlags, for every node
}

// start starts node i: new if i == len(nodes), joining through node 0
// (unless it is node 0), else restarted on its directory and addresses.
func (c *hcluster) start(i int) *hnode {
	c.t.Helper()
	c.launch(i)
	c.await(i)
	return c.nodes[i]
}

// restart starts the stopped nodes is all at once, as a cluster restarts.
func (c *hcluster) restart(is ...int) {
	c.t.Helper()
	for _, i := range is {
		c.launch(i)
	}
	for _, i := range is {
		c.await(i)
	}
}

func (c *hcluster) launch(i int) {
	if i == len(c.nodes) {
		c.nodes = append(c.nodes, &hnode{dir: c.t.TempDir(), grpc: "127.0.0.1:0", httpA: "127.0.0.1:0"})
	}
	n := c.nodes[i]
	args := append(append([]string{"-b", n.grpc, "-a", n.httpA, "-d", n.dir}, healFlags...), c.flags...)
	if i > 0 && n.grpc == "127.0.0.1:0" {
		// A new node joins through node 0; a restarted one rejoins through
		// the peers it remembers.
		args = append(args, "-j", c.nodes[0].grpc)
	}
	n.p, n.args = proctest.Start(c.t, "difused", args...), args
}

func (c *hcluster) await(i int) {
	c.t.Helper()
	n := c.nodes[i]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, err := n.p.WaitLog(ctx, serving)
	if err != nil {
		c.t.Fatal(err)
	}
	n.grpc, n.httpA = m[2], m[3]
	proctest.NoteNode(c.t, n.grpc, n.httpA, n.dir, n.args)
}

// stop ends node i with SIGTERM (or SIGKILL) and waits for it.
func (c *hcluster) stop(i int, sig syscall.Signal) {
	c.t.Helper()
	n := c.nodes[i]
	if err := n.p.Signal(sig); err != nil {
		c.t.Fatal(err)
	}
	if _, err := n.p.Wait(60 * time.Second); err != nil {
		c.t.Fatal(err)
	}
	n.p = nil
}

func (c *hcluster) live() []int {
	var out []int
	for i, n := range c.nodes {
		if n.p != nil {
			out = append(out, i)
		}
	}
	return out
}

func (c *hcluster) status(i int) (nodestatus.Status, error) {
	return nodeStatus(c.nodes[i].httpA)
}

// nodeStatus reads the /v1/status of the node serving HTTP at httpAddr.
func nodeStatus(httpAddr string) (nodestatus.Status, error) {
	resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: proctest.HTTP.Transport}).Get("http://" + httpAddr + "/v1/status")
	if err != nil {
		return nodestatus.Status{}, err
	}
	defer resp.Body.Close()
	var st nodestatus.Status
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// waitHealed waits until every live node's healing says it settled, twice
// in a row (a pass after the one that first said so), and returns how long
// that took.
func (c *hcluster) waitHealed(within time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	var firstAt map[int]int64 // node → passes when all first said settled
	for time.Since(start) < within {
		all := true
		passes := map[int]int64{}
		var states []string
		for _, i := range c.live() {
			st, err := c.status(i)
			if err != nil || !st.Heal.Settled {
				all = false
			}
			passes[i] = st.Heal.Passes
			states = append(states, fmt.Sprintf("node %d: %s settled=%v %d partitions, %d blocks, %s", i, st.Heal.State, st.Heal.Settled, st.Heal.Partitions, st.Heal.Blocks, st.Heal.LastError))
		}
		switch {
		case !all:
			firstAt = nil
		case firstAt == nil:
			firstAt = passes
		default:
			again := true
			for i, n := range passes {
				again = again && n > firstAt[i]
			}
			if again {
				return time.Since(start)
			}
		}
		if time.Since(start) > within-time.Second {
			c.t.Fatalf("healing did not settle in %s:\n%s", within, strings.Join(states, "\n"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	c.t.Fatalf("healing did not settle in %s", within)
	return 0
}

// checkPlacement stops every live node and checks, in their stores, that
// every partition and every block is held by exactly the N = 3 hosts the
// ring of those nodes names, and that a partition's replicas hold the
// same log. It returns the partitions and blocks found.
func (c *hcluster) checkPlacement() (parts, blocks int) {
	c.t.Helper()
	live := c.live()
	var refs []ring.Ref
	for _, i := range live {
		c.stop(i, syscall.SIGTERM)
		for v := range 8 {
			refs = append(refs, ring.Ref{ID: ring.VNodeID(c.nodes[i].grpc, v), Addr: c.nodes[i].grpc})
		}
	}
	var view ring.Cache
	view.Update(refs)
	placed := func(key ring.ID) []string {
		res, _ := view.Lookup(key, 3)
		var out []string
		for _, r := range res.Replicas {
			out = append(out, r.Addr)
		}
		slices.Sort(out)
		return out
	}
	partHolders := map[string][]string{}
	heads := map[string]map[txlog.Hash]bool{}
	blockHolders := map[blockstore.Hash][]string{}
	for _, i := range live {
		n := c.nodes[i]
		db, err := badgerdb.Open(badgerdb.Options{Dir: n.dir, MinFreeBytes: -1, GCInterval: -1})
		if err != nil {
			c.t.Fatal(err)
		}
		logs, err := txlog.New(txlog.Config{Addr: n.grpc}, nil, nil, db)
		if err == nil {
			err = logs.Partitions(func(p txlog.Held) error {
				partHolders[p.Name] = append(partHolders[p.Name], n.grpc)
				if cfg, want := slices.Sorted(slices.Values(p.Config)), placed(ring.HashKey([]byte(p.Name))); !slices.Equal(cfg, want) {
					c.t.Errorf("partition %q: the replica set in force on %s is %v; the ring places it on %v", p.Name, n.grpc, cfg, want)
				}
				if heads[p.Name] == nil {
					heads[p.Name] = map[txlog.Hash]bool{}
				}
				heads[p.Name][p.LastHash] = true
				return nil
			})
		}
		db.Close()
		if err != nil {
			c.t.Fatal(err)
		}
		local, err := blockstore.OpenLocal(filepath.Join(n.dir, "blocks"), nil)
		if err == nil {
			err = local.Walk(func(h blockstore.Hash) error {
				blockHolders[h] = append(blockHolders[h], n.grpc)
				return nil
			})
		}
		if err != nil {
			c.t.Fatal(err)
		}
	}
	bad := 0
	for name, holders := range partHolders {
		slices.Sort(holders)
		if want := placed(ring.HashKey([]byte(name))); !slices.Equal(holders, want) || len(heads[name]) != 1 {
			if bad++; bad <= 10 {
				c.t.Errorf("partition %q: held by %v with %d different logs; the ring places it on %v", name, holders, len(heads[name]), want)
			}
		}
	}
	for h, holders := range blockHolders {
		slices.Sort(holders)
		if want := placed(ring.ID(h)); !slices.Equal(holders, want) {
			if bad++; bad <= 10 {
				c.t.Errorf("block %s: held by %v; the ring places it on %v", h.String()[:12], holders, want)
			}
		}
	}
	if bad > 0 {
		c.t.Fatalf("%d partitions and blocks out of place (of %d and %d)", bad, len(partHolders), len(blockHolders))
	}
	return len(partHolders), len(blockHolders)
}

// mountAt mounts the cluster through node i.
func (c *hcluster) mountAt(i int, mnt string) *proctest.Proc {
	c.t.Helper()
	p := proctest.Start(c.t, "difuse-mount", "-d", c.t.TempDir(), "-j", c.nodes[i].grpc, mnt)
	c.t.Cleanup(func() {
		if cli.Mounted(mnt) {
			exec.Command("fusermount3", "-uz", mnt).Run()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := p.WaitLog(ctx, regexp.MustCompile(`msg=mounted`)); err != nil {
		c.t.Fatal(err)
	}
	return p
}

func unmountProc(t *testing.T, p *proctest.Proc) {
	t.Helper()
	p.Signal(syscall.SIGTERM)
	if code, err := p.Wait(60 * time.Second); err != nil || code != 0 {
		t.Fatalf("difuse-mount exited %d, %v", code, err)
	}
}

// kvData writes n keys through the live nodes in turn and returns them.
func (c *hcluster) kvData(n int, prefix string) map[string]string {
	c.t.Helper()
	live := c.live()
	out := map[string]string{}
	for k := range n {
		key, val := fmt.Sprintf("%s-%d", prefix, k), fmt.Sprintf("value %d of %s", k, prefix)
		if code, body := httpKV(c.t, "PUT", c.nodes[live[k%len(live)]].httpA, "/v1/kv/"+key, []byte(val)); code != http.StatusOK {
			c.t.Fatalf("PUT %s: %d %s", key, code, body)
		}
		out[key] = val
	}
	return out
}

// blockData stores n random blocks through the live nodes in turn and
// returns them by hash.
func (c *hcluster) blockData(n int, seed uint64) map[string][]byte {
	c.t.Helper()
	live := c.live()
	rng := rand.New(rand.NewPCG(seed, 1))
	out := map[string][]byte{}
	for k := range n {
		data := make([]byte, 1000+rng.IntN(200_000))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		code, body := httpKV(c.t, "PUT", c.nodes[live[k%len(live)]].httpA, "/v1/blocks", data)
		var res struct{ Hash string }
		if err := json.Unmarshal([]byte(body), &res); code != http.StatusOK || err != nil {
			c.t.Fatalf("PUT block: %d %s", code, body)
		}
		out[res.Hash] = data
	}
	return out
}

// checkData reads every key and block back at quorum through the live
// nodes in turn.
func (c *hcluster) checkData(kv map[string]string, blocks map[string][]byte) {
	c.t.Helper()
	live := c.live()
	k := 0
	for key, val := range kv {
		k++
		code, body := httpKV(c.t, "GET", c.nodes[live[k%len(live)]].httpA, "/v1/kv/"+key+"?consistency=quorum", nil)
		if code != http.StatusOK || body != val {
			c.t.Errorf("GET %s: %d %q, want %q", key, code, body, val)
		}
	}
	for h, data := range blocks {
		k++
		code, body := httpKV(c.t, "GET", c.nodes[live[k%len(live)]].httpA, "/v1/blocks/"+h, nil)
		if code != http.StatusOK || body != string(data) {
			c.t.Errorf("GET block %s: %d, %d bytes", h[:12], code, len(body))
		}
	}
}

func newHCluster(t *testing.T, n int, flags ...string) *hcluster {
	if testing.Short() {
		t.Skip("up to 5 nodes for a minute: scripts/test.sh runs it in its full pass, alone")
	}
	c := &hcluster{t: t, flags: flags}
	for i := range n {
		c.start(i)
	}
	c.waitRing()
	return c
}

// waitRing waits until the live nodes agree on the ring.
func (c *hcluster) waitRing() {
	c.t.Helper()
	var https, grpcs []string
	for _, i := range c.live() {
		https, grpcs = append(https, c.nodes[i].httpA), append(grpcs, c.nodes[i].grpc)
	}
	waitAllAgree(c.t, https, grpcs, 200, 60*time.Second)
}

// TestJoinRebalance: 2,000 files written through a mount of a 3-node
// cluster; two nodes join; once healing settles, every partition and
// block is on exactly the 3 hosts the 5-node ring names (checked in the
// stores), and after a restart every file reads back identical.
func TestJoinRebalance(t *testing.T) {
	c := newHCluster(t, 3)
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root here")
	}
	mnt := t.TempDir()
	m := c.mountAt(0, mnt)
	const files = 2000
	sums := map[string][32]byte{}
	rng := rand.New(rand.NewPCG(2026, 11))
	for i := range files {
		dir := filepath.Join(mnt, fmt.Sprintf("d%02d", i%20))
		if i < 20 {
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		data := make([]byte, rng.IntN(64<<10))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		p := filepath.Join(dir, fmt.Sprintf("f%04d", i))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		sums[p] = sha256.Sum256(data)
	}
	unmountProc(t, m)
	c.start(3)
	c.start(4)
	took := c.waitHealed(5 * time.Minute)
	for _, i := range c.live() {
		st, _ := c.status(i)
		t.Logf("node %d: %d partitions synced, %d dropped; %d blocks sent (%d bytes), %d dropped", i,
			st.Heal.PartitionsSynced, st.Heal.PartitionsDropped, st.Heal.BlocksSent, st.Heal.BytesSent, st.Heal.BlocksDropped)
	}
	parts, blocks := c.checkPlacement()
	t.Logf("healing settled %s after the joins; %d partitions and %d blocks each on exactly 3 hosts", took.Round(time.Second), parts, blocks)
	c.restart(0, 1, 2, 3, 4)
	c.waitRing()
	m = c.mountAt(3, mnt)
	for p, want := range sums {
		b, err := os.ReadFile(p)
		if err != nil || sha256.Sum256(b) != want {
			t.Errorf("%s: %v, or its content changed", p, err)
		}
	}
	unmountProc(t, m)
}

// TestKillForGood: one of 5 nodes killed for good; after the grace time
// every partition and block is on 3 of the 4 left (checked in the
// stores); then another is killed and nothing is lost.
func TestKillForGood(t *testing.T) {
	c := newHCluster(t, 5)
	kv := c.kvData(300, "k")
	blocks := c.blockData(60, 1)
	c.stop(4, syscall.SIGKILL)
	c.waitHealed(3 * time.Minute)
	parts, nblocks := c.checkPlacement()
	t.Logf("after the kill: %d partitions and %d blocks each on exactly 3 of the 4 hosts left", parts, nblocks)
	c.restart(0, 1, 2, 3)
	c.waitRing()
	c.stop(1, syscall.SIGKILL)
	c.checkData(kv, blocks)
}

// TestAntiEntropy: a node stopped while 1,000 transactions are written is
// brought level by healing alone (its own replicas, read locally, hold the
// last values); a block deleted from one replica's disk and another
// overwritten with garbage are repaired without any read touching them.
func TestAntiEntropy(t *testing.T) {
	c := newHCluster(t, 3)
	kv := c.kvData(50, "a")
	blocks := c.blockData(20, 2)
	c.stop(2, syscall.SIGTERM)
	for k := range 1000 {
		key, val := fmt.Sprintf("a-%d", k%50), fmt.Sprintf("update %d", k)
		if code, body := httpKV(t, "PUT", c.nodes[k%2].httpA, "/v1/kv/"+key, []byte(val)); code != http.StatusOK {
			t.Fatalf("PUT %s: %d %s", key, code, body)
		}
		kv[key] = val
	}
	c.start(2)
	c.waitHealed(2 * time.Minute)
	// Lazy reads through node 2 answer from its own replica.
	for key, val := range kv {
		if code, body := httpKV(t, "GET", c.nodes[2].httpA, "/v1/kv/"+key+"?consistency=lazy", nil); code != http.StatusOK || body != val {
			t.Errorf("node 2's replica of %s: %d %q, want %q", key, code, body, val)
		}
	}
	// Damage two blocks on node 2's disk.
	var hashes []string
	for h := range blocks {
		if _, err := os.Stat(blockPath(c.nodes[2].dir, h)); err == nil {
			hashes = append(hashes, h)
		}
	}
	if len(hashes) < 2 {
		t.Fatalf("node 2 holds %d of the blocks", len(hashes))
	}
	lost, damaged := blockPath(c.nodes[2].dir, hashes[0]), blockPath(c.nodes[2].dir, hashes[1])
	if err := os.Remove(lost); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(damaged, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		a, errA := os.ReadFile(lost)
		b, errB := os.ReadFile(damaged)
		if errA == nil && errB == nil && bytes.Equal(a, blocks[hashes[0]]) && bytes.Equal(b, blocks[hashes[1]]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the blocks were not repaired in a minute: %v, %v", errA, errB)
		}
		time.Sleep(500 * time.Millisecond)
	}
	st, err := c.status(2)
	if err != nil || st.Heal.BlocksCorrupt < 1 {
		t.Errorf("node 2 reports %d damaged blocks found (%v)", st.Heal.BlocksCorrupt, err)
	}
	c.checkData(kv, blocks)
}

func blockPath(dir, hash string) string { return filepath.Join(dir, "blocks", hash[:2], hash) }

// TestGracefulLeave: one of 4 nodes leaves with `difused leave` while
// clients write and read through the others: no request fails, the node
// exits, nothing is lost, and everything is on exactly 3 of the 3 left.
// The others' healing settles without waiting out the grace time (10 min
// here) for the node that left.
func TestGracefulLeave(t *testing.T) {
	c := newHCluster(t, 4, "-heal-grace", "10m")
	kv := c.kvData(100, "g")
	blocks := c.blockData(40, 3)
	var mu sync.Mutex
	var failures []string
	var ops atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			hc := &http.Client{Timeout: 30 * time.Second, Transport: proctest.HTTP.Transport}
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("g-%d", w+3*((k/2)%33)) // each writer its own keys
				url := "http://" + c.nodes[w].httpA + "/v1/kv/" + key
				var resp *http.Response
				var err error
				if k%2 == 0 {
					resp, err = hc.Do(mustRequest("PUT", url, fmt.Sprintf("w%d-%d", w, k)))
				} else {
					resp, err = hc.Get(url + "?consistency=quorum")
				}
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					} else if k%2 == 0 {
						mu.Lock()
						kv[key] = fmt.Sprintf("w%d-%d", w, k)
						mu.Unlock()
					}
				}
				ops.Add(1)
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s %s: %v", map[bool]string{true: "PUT", false: "GET"}[k%2 == 0], key, err))
					mu.Unlock()
				}
			}
		})
	}
	out, err := exec.Command(proctest.Binary(t, "difused"), "leave", "-d", c.nodes[3].dir, "-b", c.nodes[3].grpc).CombinedOutput()
	if err != nil {
		t.Fatalf("difused leave: %v\n%s", err, out)
	}
	t.Logf("difused leave:\n%s", out)
	if code, err := c.nodes[3].p.Wait(2 * time.Minute); err != nil || code != 0 {
		t.Fatalf("the leaving node exited %d, %v", code, err)
	}
	c.nodes[3].p = nil
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed during the leave, first: %v", len(failures), ops.Load(), failures[0])
	}
	t.Logf("%d requests during the leave", ops.Load())
	c.checkData(kv, blocks)
	c.waitHealed(2 * time.Minute)
	c.checkPlacement()
}

func mustRequest(method, url, body string) *http.Request {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		panic(err)
	}
	return req
}
