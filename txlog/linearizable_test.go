package txlog

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/ring"
)

// counterInput is one operation on a per-key counter register.
type counterInput struct {
	Key      string
	CAS      bool // else a read
	Old, New int
}

// counterOutput is its outcome.
type counterOutput struct {
	Value   int
	OK      bool
	Unknown bool // the operation may or may not have taken effect
}

// counterModel is a register per key holding an int, read and
// compare-and-set.
var counterModel = porcupine.NondeterministicModel{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(counterInput).Key
			if _, ok := by[k]; !ok {
				keys = append(keys, k)
			}
			by[k] = append(by[k], op)
		}
		out := make([][]porcupine.Operation, len(keys))
		for i, k := range keys {
			out[i] = by[k]
		}
		return out
	},
	Init: func() []any { return []any{0} },
	Step: func(state, input, output any) []any {
		s, in, out := state.(int), input.(counterInput), output.(counterOutput)
		switch {
		case !in.CAS:
			if out.Value == s {
				return []any{s}
			}
			return nil
		case out.Unknown:
			if s == in.Old {
				return []any{s, in.New}
			}
			return []any{s}
		case out.OK:
			if s == in.Old {
				return []any{in.New}
			}
			return nil
		default:
			if s != in.Old {
				return []any{s}
			}
			return nil
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(counterInput), output.(counterOutput)
		if !in.CAS {
			return fmt.Sprintf("read(%s) = %d", in.Key, out.Value)
		}
		res := strconv.FormatBool(out.OK)
		if out.Unknown {
			res = "?"
		}
		return fmt.Sprintf("cas(%s, %d→%d) %s", in.Key, in.Old, in.New, res)
	},
}

// outcome is how one increment attempt ended.
type outcome int

const (
	readFailed outcome = iota // nothing recorded
	incremented
	conflicted
	unknownOutcome
)

// increment reads key's counter at quorum through svc and compare-and-sets
// it one higher, recording both operations in h. It returns how the attempt
// ended and, when it was acknowledged, the transaction.
func increment(svc *Service, h *history, client int, key string, timeout time.Duration) (outcome, TxRef) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	call := h.now()
	rec, err := svc.Read(ctx, key, "n", level.Quorum)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return readFailed, TxRef{} // a failed read leaves no trace
	}
	v := 0
	if rec.Exists {
		v, _ = strconv.Atoi(string(rec.Value))
	}
	h.add(client, counterInput{Key: key}, counterOutput{Value: v}, call)
	ifMatch := rec.Hash
	if !rec.Exists {
		ifMatch = Hash{}
	}
	ctx, cancel = context.WithTimeout(context.Background(), timeout)
	defer cancel()
	call = h.now()
	ref, err := svc.Write(ctx, key, []Change{{Name: "n", Value: []byte(strconv.Itoa(v + 1)), IfMatch: &ifMatch}}, level.Quorum)
	in := counterInput{Key: key, CAS: true, Old: v, New: v + 1}
	switch {
	case err == nil:
		h.add(client, in, counterOutput{OK: true}, call)
		return incremented, ref
	case errors.Is(err, ErrConflict):
		h.add(client, in, counterOutput{}, call)
		return conflicted, TxRef{}
	default:
		h.add(client, in, counterOutput{Unknown: true}, call)
		return unknownOutcome, TxRef{}
	}
}

// history collects operations from concurrent clients.
type history struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(client int, in counterInput, out counterOutput, call int64) {
	ret := h.now()
	if out.Unknown {
		ret = 1 << 62 // may take effect at any time after the call
	}
	h.mu.Lock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
	h.mu.Unlock()
}

// Five clients increment three counters by read + compare-and-set at
// quorum, through random hosts of a five-host cluster, while the leader of
// one key is killed and restarted and the network is split 2|3. The
// history is linearizable, and each final counter lies between the
// acknowledged increments and those plus the ones whose outcome is unknown
// (equal when none is unknown).
// Every acknowledged write is also checked to be in the final log at the
// height it was acknowledged at.
func TestLinearizableUnderFaults(t *testing.T) {
	c := newCluster(t, 5)
	keys := []string{"lin/k0", "lin/k1", "lin/k2"}
	h := &history{start: time.Now()}
	var acked, unknown [3]atomic.Int64
	var refsMu sync.Mutex
	ackedRefs := map[string][]TxRef{}
	var total atomic.Int64
	target := int64(1000)
	if testing.Short() {
		target = 300
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for client := range 5 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(client), 42))
			for total.Load() < target {
				select {
				case <-stop:
					return
				default:
				}
				ki := rng.IntN(len(keys))
				addr := c.addrs[rng.IntN(len(c.addrs))]
				if c.faults.Down(addr) {
					continue // clients use live hosts
				}
				switch res, ref := increment(c.host(addr).svc, h, client, keys[ki], 2*time.Second); res {
				case incremented:
					acked[ki].Add(1)
					total.Add(1)
					refsMu.Lock()
					ackedRefs[keys[ki]] = append(ackedRefs[keys[ki]], ref)
					refsMu.Unlock()
				case unknownOutcome:
					unknown[ki].Add(1)
				}
			}
		})
	}

	// The nemesis: kill the leader of keys[0], restart it, then split 2|3.
	waitFor := func(n int64) {
		deadline := time.Now().Add(60 * time.Second)
		for total.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("no progress: %d of %d increments after 60 s", total.Load(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(target / 5)
	res, err := c.host("h0").ring.Lookup(context.Background(), ring.HashKey([]byte(keys[0])), 3)
	if err != nil {
		t.Fatal(err)
	}
	victim := res.Leader().Addr
	t.Logf("killing %s, leader of %s, after %d increments", victim, keys[0], total.Load())
	c.kill(victim)
	waitFor(2 * target / 5)
	t.Logf("restarting %s after %d increments", victim, total.Load())
	c.restart(victim)
	waitFor(3 * target / 5)
	t.Logf("splitting %v | %v after %d increments", c.addrs[:2], c.addrs[2:], total.Load())
	c.faults.Partition(c.addrs[:2], c.addrs[2:])
	time.Sleep(500 * time.Millisecond)
	c.faults.Heal()
	t.Logf("healed after %d increments", total.Load())
	waitFor(target)
	close(stop)
	wg.Wait()

	// Every acknowledged write is in the final log, at its height.
	for _, k := range keys {
		if _, err := c.host("h0").svc.Read(ctxFor(t, 10*time.Second), k, "n", level.Quorum); err != nil {
			t.Fatal(err)
		}
		res, _ := c.host("h0").ring.Lookup(context.Background(), ring.HashKey([]byte(k)), 3)
		txs := fullLog(t, c.host(res.Leader().Addr).svc, k)
		lost := 0
		for _, r := range ackedRefs[k] {
			if r.Height > uint64(len(txs)) || txs[r.Height-1].Hash() != r.Hash {
				lost++
				if lost <= 3 {
					t.Errorf("%s: acknowledged write at height %d is not in the final log", k, r.Height)
				}
			}
		}
		if lost > 0 {
			t.Errorf("%s: %d of %d acknowledged writes lost", k, lost, len(ackedRefs[k]))
		}
		// Every value in the log was written by an acknowledged or unknown
		// compare-and-set, never by one reported as failed.
		okOrUnknown := map[int]bool{}
		for _, op := range h.ops {
			in, out := op.Input.(counterInput), op.Output.(counterOutput)
			if in.Key == k && in.CAS && (out.OK || out.Unknown) {
				okOrUnknown[in.New] = true
			}
		}
		for _, tx := range txs {
			for _, op := range tx.Ops {
				if op.Kind == OpSet && op.Name == "n" {
					if v, _ := strconv.Atoi(string(op.Value)); !okOrUnknown[v] {
						t.Logf("%s: the log holds %d at height %d, written by a cas reported as failed", k, v, tx.Height)
					}
				}
			}
		}
	}
	result, info := porcupine.CheckOperationsVerbose(counterModel.ToModel(), h.ops, 60*time.Second)
	if result != porcupine.Ok {
		path := filepath.Join(os.TempDir(), "txlog-linearizability.html")
		porcupine.VisualizePath(counterModel.ToModel(), info, path)
		explain(t, h.ops)
		// The longest linearizable prefix of the failing partition, and the
		// operations that could not follow it.
		for pi, part := range info.PartialLinearizationsOperations() {
			longest := 0
			for i, lin := range part {
				if len(lin) > len(part[longest]) {
					longest = i
				}
			}
			if len(part) == 0 {
				continue
			}
			lin := part[longest]
			total := 0
			for _, op := range h.ops {
				if op.Input.(counterInput).Key == lin[0].Input.(counterInput).Key {
					total++
				}
			}
			if len(lin) == total {
				continue
			}
			t.Logf("partition %d (%s): %d of %d operations linearize; the last ones:", pi, lin[0].Input.(counterInput).Key, len(lin), total)
			for _, op := range lin[max(0, len(lin)-6):] {
				t.Logf("   client %d %s [%d, %d] ms", op.ClientId, counterModel.DescribeOperation(op.Input, op.Output), op.Call/1e6, min(op.Return, 1<<40)/1e6)
			}
			last := lin[len(lin)-1]
			for _, op := range h.ops {
				if op.Input.(counterInput).Key == last.Input.(counterInput).Key && op.Call <= last.Return+int64(5*time.Millisecond) && op.Return >= last.Call {
					t.Logf("   concurrent: client %d %s [%d, %d] ms", op.ClientId, counterModel.DescribeOperation(op.Input, op.Output), op.Call/1e6, min(op.Return, 1<<40)/1e6)
				}
			}
		}
		t.Fatalf("history of %d operations is %v; timeline in %s", len(h.ops), result, path)
	}
	ctx := ctxFor(t, 10*time.Second)
	for i, k := range keys {
		rec, err := c.host("h0").svc.Read(ctx, k, "n", level.Quorum)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := strconv.Atoi(string(rec.Value))
		a, u := acked[i].Load(), unknown[i].Load()
		if int64(v) < a || int64(v) > a+u {
			t.Errorf("%s = %d: %d increments acknowledged, %d unknown", k, v, a, u)
		}
		t.Logf("%s = %d (%d acknowledged, %d unknown)", k, v, a, u)
	}
	t.Logf("%d operations, linearizable", len(h.ops))
}

// explain logs the simplest anomalies in a history: two acknowledged
// compare-and-sets from the same value, and reads older than a value
// acknowledged before they began.
func explain(t *testing.T, ops []porcupine.Operation) {
	from := map[string]map[int]porcupine.Operation{}
	for _, op := range ops {
		in, out := op.Input.(counterInput), op.Output.(counterOutput)
		if !in.CAS || !out.OK || out.Unknown {
			continue
		}
		if from[in.Key] == nil {
			from[in.Key] = map[int]porcupine.Operation{}
		}
		if prev, dup := from[in.Key][in.Old]; dup {
			t.Logf("%s: two acknowledged cas from %d: clients %d and %d", in.Key, in.Old, prev.ClientId, op.ClientId)
		}
		from[in.Key][in.Old] = op
	}
	for _, op := range ops {
		in, out := op.Input.(counterInput), op.Output.(counterOutput)
		if !in.CAS || out.OK || out.Unknown {
			continue
		}
		w, ok := from[in.Key][in.Old-1]
		if in.Old == 0 {
			ok, w = true, porcupine.Operation{Return: 0}
		}
		if !ok || w.Return > op.Call {
			continue
		}
		moved := false
		for _, o := range ops {
			oi, oo := o.Input.(counterInput), o.Output.(counterOutput)
			if oi.CAS && oi.Key == in.Key && oi.Old == in.Old && (oo.OK || oo.Unknown) && o.Call < op.Return {
				moved = true
			}
		}
		if !moved {
			t.Logf("%s: client %d's cas %d→%d [%d, %d] failed though nothing had moved the value from %d", in.Key, op.ClientId, in.Old, in.New, op.Call/1e6, op.Return/1e6, in.Old)
			for _, o := range ops {
				oi, oo := o.Input.(counterInput), o.Output.(counterOutput)
				if oi.Key == in.Key && ((oi.CAS && oi.Old >= in.Old-2 && oi.Old <= in.Old+1) || (!oi.CAS && oo.Value >= in.Old-2 && oo.Value <= in.Old+1)) {
					t.Logf("   client %d %s [%d ms, %d ms]", o.ClientId, counterModel.DescribeOperation(oi, oo), o.Call/1e6, min(o.Return, 1<<40)/1e6)
				}
			}
		}
	}
	produced := map[string]map[int]bool{}
	for _, op := range ops {
		in, out := op.Input.(counterInput), op.Output.(counterOutput)
		if in.CAS && (out.OK || out.Unknown) {
			if produced[in.Key] == nil {
				produced[in.Key] = map[int]bool{}
			}
			produced[in.Key][in.New] = true
		}
	}
	for _, op := range ops {
		in, out := op.Input.(counterInput), op.Output.(counterOutput)
		if !in.CAS && out.Value != 0 && !produced[in.Key][out.Value] {
			t.Logf("%s: client %d read %d, which no acknowledged or unknown cas wrote", in.Key, op.ClientId, out.Value)
		}
		for _, o := range ops {
			oi, oo := o.Input.(counterInput), o.Output.(counterOutput)
			if !in.CAS && !oi.CAS && oi.Key == in.Key && o.Return < op.Call && oo.Value > out.Value {
				t.Logf("%s: client %d read %d after client %d had read %d", in.Key, op.ClientId, out.Value, o.ClientId, oo.Value)
				break
			}
		}
	}
	for _, op := range ops {
		in, out := op.Input.(counterInput), op.Output.(counterOutput)
		if in.CAS {
			continue
		}
		for old, w := range from[in.Key] {
			if w.Return < op.Call && out.Value <= old {
				t.Logf("%s: client %d read %d after cas %d→%d was acknowledged", in.Key, op.ClientId, out.Value, old, old+1)
				break
			}
		}
	}
}

// Without faults, the same clients produce a linearizable history whose
// counters equal the acknowledged increments exactly.
func TestLinearizableNoFaults(t *testing.T) {
	c := newCluster(t, 5)
	keys := []string{"nf/k0", "nf/k1"}
	h := &history{start: time.Now()}
	var acked [2]atomic.Int64
	var wg sync.WaitGroup
	for client := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(client), 7))
			for range 60 {
				ki := rng.IntN(len(keys))
				switch res, _ := increment(c.host(c.addrs[rng.IntN(len(c.addrs))]).svc, h, client, keys[ki], 5*time.Second); res {
				case incremented:
					acked[ki].Add(1)
				case readFailed, unknownOutcome:
					t.Errorf("increment without faults: %v", res)
					return
				}
			}
		})
	}
	wg.Wait()
	if !porcupine.CheckOperations(counterModel.ToModel(), h.ops) {
		explain(t, h.ops)
		t.Fatalf("history of %d operations is not linearizable", len(h.ops))
	}
	for i, k := range keys {
		rec, err := c.host("h3").svc.Read(ctxFor(t, 5*time.Second), k, "n", level.All)
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := strconv.Atoi(string(rec.Value)); int64(v) != acked[i].Load() {
			t.Errorf("%s = %d, %d increments acknowledged", k, v, acked[i].Load())
		}
	}
}
