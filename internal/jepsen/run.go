package jepsen

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/anishathalye/porcupine"
)

// Config describes a run.
type Config struct {
	// Bin is the directory holding the difused and difuse-mount binaries.
	Bin string
	// Dir receives the nodes' data and logs, and, on a violation, the
	// history and porcupine's timeline.
	Dir string
	// Nodes is how many difused processes run. Default 5.
	Nodes int
	// Seed makes the schedule and the workload; 0 picks one (printed).
	Seed uint64
	// Duration is how long the workload and the nemesis run. Default 1m.
	Duration time.Duration
	// Clients run register operations concurrently, each through one node.
	// Default 10.
	Clients int
	// Keys is how many registers they share at a time. Default 5.
	Keys int
	// KeyLife is how long the clients use the same keys before they move
	// on to fresh ones: the checker's work grows fast with the length of a
	// key's history. Default 30s.
	KeyLife time.Duration
	// Hold is how long a fault lasts, Quiet how long the cluster is left
	// alone between faults (each with jitter). Defaults 6s and 4s.
	Hold, Quiet time.Duration
	// Mounts is how many difuse-mount clients of the cluster run the
	// filesystem workload, with FSClients clients each. Defaults 2 and 2;
	// Mounts -1 runs none.
	Mounts, FSClients int
	// Faults are the kinds of fault the nemesis chooses from; empty means
	// all of them (faultKinds).
	Faults []string
	// Cover are kinds of fault the nemesis does first, in this order,
	// before it chooses at random: what a short run must include.
	Cover []string
	// PlantedBug starts the nodes with a bug planted in the transaction
	// logs, which the harness must catch: "local-reads" (replicas answer
	// reads from their own copies) or "forget-promises" (replicas forget
	// the ballots they promised). Empty: none.
	PlantedBug string
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

// thinkTime bounds a register client's pause between operations; without
// one, tens of thousands of operations a minute make the history too
// large to check.
const thinkTime = 100 * time.Millisecond

// Summary is what a run found.
type Summary struct {
	Seed                 uint64
	Ops, OK, Failed, Unk int
	Faults               int
	FaultKinds           string
	// Violations counts the keys whose history is not linearizable;
	// Unchecked is set if the checker ran out of time before it decided.
	Violations int
	Unchecked  bool
	// Lost lists the keys whose final value lost an acknowledged write.
	Lost []string
	// FSOps counts the filesystem operations, FSUnknown those of unknown
	// outcome; FSViolations lists broken filesystem invariants.
	FSOps, FSUnknown int
	FSViolations     []string
	// WeakReads counts the reads at leader and lazy level; WeakViolations
	// lists those that returned what their level does not allow.
	WeakReads      int
	WeakViolations []string
	// Results is where the evidence went, if there was a violation.
	Results string
}

// Bad reports whether the run found anything wrong.
func (s Summary) Bad() bool {
	return s.Violations > 0 || s.Unchecked || len(s.Lost) > 0 || len(s.FSViolations) > 0 || len(s.WeakViolations) > 0
}

// String is the one-line summary.
func (s Summary) String() string {
	violations := fmt.Sprint(s.Violations)
	if s.Unchecked {
		violations = "unknown (the checker timed out)"
	}
	return fmt.Sprintf("jepsen: seed=%d register-ops=%d (ok %d, failed %d, unknown %d) weak-reads=%d fs-ops=%d (unknown %d) faults=%d (%s) violations=%s lost-writes=%d weak-read-violations=%d fs-violations=%d",
		s.Seed, s.Ops, s.OK, s.Failed, s.Unk, s.WeakReads, s.FSOps, s.FSUnknown, s.Faults, s.FaultKinds, violations, len(s.Lost), len(s.WeakViolations), len(s.FSViolations))
}

// Run starts a cluster in network namespaces, runs the workload under the
// nemesis, heals everything, reads every key back, and checks the history.
// It needs root (namespaces) and cleans up after itself.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 5
	}
	if cfg.Duration == 0 {
		cfg.Duration = time.Minute
	}
	if cfg.Clients == 0 {
		cfg.Clients = 10
	}
	if cfg.Keys == 0 {
		cfg.Keys = 5
	}
	if cfg.KeyLife == 0 {
		cfg.KeyLife = 30 * time.Second
	}
	if cfg.Hold == 0 {
		cfg.Hold = 6 * time.Second
	}
	if cfg.Quiet == 0 {
		cfg.Quiet = 4 * time.Second
	}
	if cfg.Mounts == 0 {
		cfg.Mounts = 2
	}
	if cfg.FSClients == 0 {
		cfg.FSClients = 2
	}
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sum := Summary{Seed: cfg.Seed}
	env, err := plantedBugEnv(cfg.PlantedBug)
	if err != nil {
		return sum, err
	}
	if cfg.Dir, err = filepath.Abs(cfg.Dir); err != nil {
		return sum, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return sum, err
	}
	log.Info("jepsen: starting", "seed", cfg.Seed, "nodes", cfg.Nodes, "duration", cfg.Duration, "planted_bug", cfg.PlantedBug)
	sweepLeftovers(log)
	rec := runRecord{PID: os.Getpid(), Prefix: prefixFor(os.Getpid()), Dir: cfg.Dir}
	if err := rec.save(); err != nil {
		return sum, fmt.Errorf("record the run: %w", err)
	}
	defer rec.remove()
	net, err := newNetwork(os.Getpid())
	if err != nil {
		return sum, err
	}
	defer net.close()
	c, err := startCluster(ctx, net, cfg.Bin, cfg.Dir, env, cfg.Nodes, cfg.Seed)
	if err != nil {
		return sum, err
	}
	defer c.stop()

	hist := newHistory()
	keys := registers{start: hist.start, n: cfg.Keys, life: cfg.KeyLife}
	nem := &nemesis{c: c, rng: rand.New(rand.NewPCG(cfg.Seed, 2)), hotKey: func() string { return keys.set(keys.generation()) },
		kinds: cfg.Faults, cover: cfg.Cover, size: cfg.Nodes, log: log}
	if len(nem.kinds) == 0 {
		nem.kinds = faultKinds
	}
	var mounts []*mount
	for i := range max(cfg.Mounts, 0) {
		m, err := startMount(ctx, c, cfg.Bin, mountDir(cfg.Dir, i), i)
		if err != nil {
			return sum, err
		}
		// Before the nodes stop: a mount that outlives them waits on them.
		defer m.stop()
		mounts = append(mounts, m)
	}
	var fsClients []*fsClient
	counts := &fsCounts{}
	if len(mounts) > 0 {
		if err := setupFS(filepath.Join(mounts[0].dir, "jepsen")); err != nil {
			return sum, fmt.Errorf("set up the filesystem workload: %w", err)
		}
		time.Sleep(2 * time.Second) // past the mounts' cache time
		for i := range len(mounts) * cfg.FSClients {
			fsClients = append(fsClients, &fsClient{id: i, root: filepath.Join(mounts[i%len(mounts)].dir, "jepsen"),
				rng: rand.New(rand.NewPCG(cfg.Seed, uint64(1000+i))), ops: counts})
		}
	}
	wctx, stop := context.WithTimeout(ctx, cfg.Duration)
	defer stop()
	var wg sync.WaitGroup
	for _, fc := range fsClients {
		wg.Go(func() {
			for wctx.Err() == nil {
				fc.step(wctx)
			}
		})
	}
	for i := range cfg.Clients {
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(10+i)))
		base := func() string { // a member at random for each request
			m := c.members()
			return "http://" + c.httpAddr(m[rng.IntN(len(m))])
		}
		cl := &kvClient{id: i, base: base, hist: hist, keys: keys, http: c.client(), rng: rng}
		wg.Go(func() {
			for wctx.Err() == nil {
				cl.step(wctx)
				time.Sleep(time.Duration(cl.rng.IntN(int(thinkTime))))
			}
		})
	}
	nemErr := make(chan error, 1)
	go func() {
		err := nem.run(wctx, cfg.Hold, cfg.Quiet)
		if err != nil {
			stop() // the workload ends with the nemesis
		}
		nemErr <- err
	}()
	wg.Wait()
	lastGen := keys.generation()
	if err := <-nemErr; err != nil {
		return sum, fmt.Errorf("nemesis: %w", err)
	}
	sum.Faults, sum.FaultKinds = len(nem.faults), nem.summary()
	log.Info("jepsen: workload done; healing", "ops", len(hist.ops), "faults", nem.faults)

	// Heal: every member running and unpaused, no partition; then read
	// every key back at quorum through every member in turn until one
	// answers.
	if err := net.heal(); err != nil {
		return sum, err
	}
	members := c.members()
	for _, i := range members {
		n := c.node(i)
		if !n.running() {
			if err := n.start(); err != nil {
				return sum, err
			}
			if err := c.waitServing(ctx, i); err != nil {
				return sum, err
			}
		}
		n.signal(syscall.SIGCONT)
	}
	if err := c.waitSettled(ctx); err != nil {
		return sum, err
	}
	final := map[string]string{}
	var unreadable []string
	reader := &kvClient{id: cfg.Clients, hist: hist, http: c.client()}
	for _, k := range keys.upTo(lastGen) {
		read := false
		for attempt := 0; attempt < 30 && !read; attempt++ {
			reader.base = func() string { return "http://" + c.httpAddr(members[attempt%len(members)]) }
			call := hist.now()
			if v, _, ok := reader.get(ctx, k, "quorum"); ok {
				hist.add(reader.id, regInput{Key: k, Kind: opRead, Level: "quorum"}, regOutput{Value: v}, call)
				final[k], read = v, true
			} else {
				time.Sleep(time.Second)
			}
		}
		if !read {
			// Whatever it held is lost to its readers.
			unreadable = append(unreadable, k+": unreadable at quorum after the cluster healed")
		}
	}

	if len(mounts) > 0 {
		time.Sleep(2 * time.Second) // past the mounts' cache time
		sum.FSViolations = checkFS(filepath.Join(mounts[0].dir, "jepsen"), fsClients)
		sum.FSOps, sum.FSUnknown = counts.ops, counts.unk
	}
	sum.Ops, sum.OK, sum.Failed, sum.Unk = len(hist.ops), hist.ok, hist.failed, hist.unknown
	// Five minutes bounds the search's memory too: a 15-minute search of a
	// 163,000-operation history used 24 GiB before the kernel killed it.
	res, info := porcupine.CheckOperationsVerbose(registerModel.ToModel(), hist.ops, 5*time.Minute)
	switch res {
	case porcupine.Illegal:
		sum.Violations = countIllegal(hist.ops)
	case porcupine.Unknown:
		sum.Unchecked = true
	}
	sum.Lost = append(lostWrites(hist.ops, final), unreadable...)
	sum.Lost = append(sum.Lost, lostAdds(hist.ops, final, func(k string) bool { return strings.HasPrefix(k, "s") })...)
	sum.WeakReads, sum.WeakViolations = len(hist.weak), checkWeakReads(hist.ops, hist.weak)
	if sum.Bad() {
		sum.Results = filepath.Join(cfg.Dir, "results")
		if err := writeResults(sum.Results, hist.ops, info, sum); err != nil {
			return sum, err
		}
	}
	return sum, nil
}

// countIllegal counts the keys whose own history is not linearizable.
func countIllegal(ops []porcupine.Operation) int {
	n := 0
	for _, part := range registerModel.Partition(ops) {
		if porcupine.CheckOperationsTimeout(registerModel.ToModel(), part, time.Minute) == porcupine.Illegal {
			n++
		}
	}
	return n
}

// writeResults keeps the evidence of a violation: the history, the
// summary and porcupine's timeline.
func writeResults(dir string, ops []porcupine.Operation, info porcupine.LinearizationInfo, sum Summary) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(ops, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "history.json"), b, 0o644); err != nil {
		return err
	}
	report := sum.String() + "\n"
	for _, l := range sum.Lost {
		report += "lost: " + l + "\n"
	}
	for _, v := range sum.WeakViolations {
		report += "weak read: " + v + "\n"
	}
	for _, v := range sum.FSViolations {
		report += "fs: " + v + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(report), 0o644); err != nil {
		return err
	}
	return porcupine.VisualizePath(registerModel.ToModel(), info, filepath.Join(dir, "timeline.html"))
}

// plantedBugEnv returns the environment that plants bug in the nodes.
func plantedBugEnv(bug string) ([]string, error) {
	switch bug {
	case "":
		return nil, nil
	case "local-reads":
		return []string{"DIFUSE_UNSAFE_LOCAL_READS=1"}, nil
	case "forget-promises":
		return []string{"DIFUSE_UNSAFE_FORGET_PROMISES=1"}, nil
	}
	return nil, fmt.Errorf("unknown planted bug %q: local-reads or forget-promises", bug)
}
