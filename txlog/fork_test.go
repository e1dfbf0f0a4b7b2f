package txlog

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/difuse/difuse/level"
)

// ackedWrite is a write a client was told succeeded.
type ackedWrite struct {
	partition string
	lv        level.Level
	ref       TxRef
}

// No fork can be committed at quorum or all: over random schedules of
// kills, restarts, partitions and message loss, with clients writing
// blindly to a few partitions through random hosts, no two acknowledged
// writes hold the same height of a partition's log, every acknowledged
// write is in the final log at its height, every replica's log is a hash
// chain, and any two replicas agree on every entry both have committed.
// The schedule of each run derives from its printed seed.
func TestNoForkUnderRandomSchedules(t *testing.T) {
	runs := 8
	if testing.Short() {
		runs = 3
	}
	base := uint64(time.Now().UnixNano())
	for i := range runs {
		seed := base + uint64(i)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { forkSchedule(t, seed) })
	}
}

func forkSchedule(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	c := newCluster(t, 5)
	parts := []string{"fork/a", "fork/b", "fork/c", "fork/d"}

	var mu sync.Mutex
	var acked []ackedWrite
	var attempts atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for client := range 4 {
		crng := rand.New(rand.NewPCG(seed, uint64(client)))
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				addr := c.addrs[crng.IntN(len(c.addrs))]
				if c.faults.Down(addr) {
					time.Sleep(time.Millisecond)
					continue
				}
				p := parts[crng.IntN(len(parts))]
				lv := []level.Level{level.Quorum, level.Quorum, level.All}[crng.IntN(3)]
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				ref, err := c.host(addr).svc.Write(ctx, p, set(fmt.Sprintf("r%d", crng.IntN(3)), fmt.Sprintf("c%d-%d", client, n)), lv)
				cancel()
				attempts.Add(1)
				if err == nil {
					mu.Lock()
					acked = append(acked, ackedWrite{p, lv, ref})
					mu.Unlock()
				}
			}
		})
	}

	// The nemesis.
	var killed []string
	var steps []string
	defer func() {
		if t.Failed() {
			t.Logf("schedule so far: %s", strings.Join(steps, ", "))
		}
	}()
	for range 10 {
		var live []string
		for _, a := range c.addrs {
			if !slices.Contains(killed, a) {
				live = append(live, a)
			}
		}
		switch r := rng.IntN(6); {
		case r == 0 && len(killed) < 1:
			v := live[rng.IntN(len(live))]
			c.kill(v)
			killed = append(killed, v)
			steps = append(steps, "kill "+v)
		case r == 1 && len(killed) > 0:
			v := killed[0]
			killed = killed[1:]
			// A restarting host rejoins through the whole network: in a
			// split or a lossy network it can stay out longer than the test
			// waits.
			c.faults.Heal()
			c.faults.SetDropRate(0)
			steps = append(steps, "heal")
			if err := c.tryRestart(v); err != nil {
				killed = append(killed, v)
				steps = append(steps, fmt.Sprintf("restart %s failed (%v)", v, err))
			} else {
				steps = append(steps, "restart "+v)
			}
		case r == 2:
			shuffled := slices.Clone(c.addrs)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			cut := 1 + rng.IntN(len(shuffled)-1)
			c.faults.Partition(shuffled[:cut], shuffled[cut:])
			steps = append(steps, fmt.Sprintf("split %v|%v", shuffled[:cut], shuffled[cut:]))
		case r == 3:
			c.faults.SetDropRate(0.2)
			steps = append(steps, "drop 20%")
		default:
			c.faults.Heal()
			c.faults.SetDropRate(0)
			steps = append(steps, "heal")
		}
		time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
	}
	// The clients stop first: on two busy cores their load can keep the
	// ring from settling.
	close(stop)
	wg.Wait()
	c.faults.Heal()
	c.faults.SetDropRate(0)
	for _, v := range killed {
		// A host that cannot rejoin (see ring.md, open problems) stays
		// dead; its log on disk is checked all the same.
		if err := c.tryRestart(v); err != nil {
			t.Logf("%s could not rejoin: %v", v, err)
		}
	}
	t.Logf("schedule: %s", strings.Join(steps, ", "))
	t.Logf("%d writes attempted, %d acknowledged", attempts.Load(), len(acked))
	// Settle every partition with a quorum read, then compare the logs. If
	// the ring does not settle (see ring.md, open problems), the safety
	// checks still run, but a write need not be known committed yet.
	settled := c.trySettle()
	if !settled {
		t.Log("the ring did not settle in 10 s; checking safety only")
	}
	ctx := ctxFor(t, 30*time.Second)
	for _, p := range parts {
		if !settled {
			break
		}
		if _, err := c.host(c.addrs[0]).svc.Read(ctx, p, "r0", level.Quorum); err != nil && !errorsIs(err, ErrNotFound) {
			t.Errorf("quorum read of %s after healing: %v", p, err)
			for _, a := range c.addrs {
				txs := fullLog(t, c.host(a).svc, p)
				pt, _ := c.host(a).svc.ps.get(p)
				pt.mu.Lock()
				line := fmt.Sprintf("%s: promised %s commit %d config %v:", a, pt.promised, pt.commit, pt.config)
				pt.mu.Unlock()
				for _, tx := range txs[:min(len(txs), 4)] {
					line += fmt.Sprintf(" [%d %s %s %d ops kind %d]", tx.Height, tx.Hash().String()[:6], tx.Ballot, len(tx.Ops), tx.Ops[0].Kind)
				}
				t.Log(line)
			}
		}
	}
	byHeight := map[string]map[uint64]ackedWrite{}
	for _, w := range acked {
		if byHeight[w.partition] == nil {
			byHeight[w.partition] = map[uint64]ackedWrite{}
		}
		if o, ok := byHeight[w.partition][w.ref.Height]; ok && o.ref.Hash != w.ref.Hash {
			t.Errorf("fork: %s height %d acknowledged as %s (%s) and as %s (%s)", w.partition, w.ref.Height, o.ref.Hash, o.lv, w.ref.Hash, w.lv)
		}
		byHeight[w.partition][w.ref.Height] = w
	}
	for _, p := range parts {
		type replica struct {
			addr   string
			txs    []*Tx
			commit uint64
		}
		var reps []replica
		for _, a := range c.addrs {
			svc := c.host(a).svc
			txs := fullLog(t, svc, p)
			pt, err := svc.ps.get(p)
			if err != nil {
				t.Fatal(err)
			}
			pt.mu.Lock()
			commit := pt.commit
			pt.mu.Unlock()
			var prev Hash
			for i, tx := range txs {
				if tx.Height != uint64(i+1) || tx.Prev != prev {
					t.Errorf("%s on %s: the log does not chain at height %d", p, a, i+1)
					break
				}
				prev = tx.Hash()
			}
			reps = append(reps, replica{a, txs, commit})
		}
		for i := range reps {
			for j := i + 1; j < len(reps); j++ {
				a, b := reps[i], reps[j]
				for h := uint64(1); h <= min(a.commit, b.commit, uint64(len(a.txs)), uint64(len(b.txs))); h++ {
					if a.txs[h-1].Hash() != b.txs[h-1].Hash() {
						t.Errorf("%s: %s and %s both committed height %d, differently", p, a.addr, b.addr, h)
						break
					}
				}
			}
		}
		// The replica that has committed most holds every acknowledged
		// write, committed, at its height (once settled, the quorum read
		// has committed everything).
		best := slices.MaxFunc(reps, func(a, b replica) int { return int(a.commit) - int(b.commit) })
		for h, w := range byHeight[p] {
			if (settled && h > best.commit) || (h <= best.commit && best.txs[h-1].Hash() != w.ref.Hash) {
				t.Errorf("%s: the write acknowledged at %s, height %d, is not committed at %s (commit %d)", p, w.lv, h, best.addr, best.commit)
			}
		}
	}
}
