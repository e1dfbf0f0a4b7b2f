package jepsen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// history records operations as porcupine wants them.
type history struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
	// weak are the reads at leader and lazy level, which are not
	// linearizable and are checked apart (checkWeakReads).
	weak []porcupine.Operation
	// counts of outcomes
	ok, failed, unknown int
}

func newHistory() *history { return &history{start: time.Now()} }

func (h *history) now() int64 { return int64(time.Since(h.start)) }

// unknownReturn is the return time of an operation whose outcome is
// unknown: it may take effect at any time after its call.
const unknownReturn = int64(1) << 62

// add records an operation called at call that returned now.
func (h *history) add(client int, in regInput, out regOutput, call int64) {
	ret := h.now()
	if out.Outcome == outUnknown {
		ret = unknownReturn
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
	switch out.Outcome {
	case outOK:
		h.ok++
	case outFailed, outConflict:
		h.failed++
	default:
		h.unknown++
	}
}

// registers names the keys the clients use: n at a time, fresh ones every
// life, so that each key's history (its unknown writes above all, which
// stay open to the end) stays short enough to check.
type registers struct {
	start time.Time
	n     int
	life  time.Duration
}

// generation returns the generation of keys in use now.
func (r registers) generation() int { return int(time.Since(r.start) / r.life) }

// current returns the keys in use now.
func (r registers) current() []string { return r.of(r.generation()) }

// of returns the keys of generation g.
func (r registers) of(g int) []string {
	keys := make([]string, r.n)
	for i := range keys {
		keys[i] = fmt.Sprintf("r%d-%d", g, i)
	}
	return keys
}

// set returns generation g's set: a key to which clients only append
// unique elements by compare-and-set, so that its final value must hold
// every acknowledged append. A write lost to a register is hidden by the
// next write; one lost to the set is not.
func (r registers) set(g int) string { return fmt.Sprintf("s%d", g) }

// upTo returns the keys and sets of generations 0 to last.
func (r registers) upTo(last int) []string {
	var keys []string
	for g := range last + 1 {
		keys = append(append(keys, r.of(g)...), r.set(g))
	}
	return keys
}

// addWeak records a read at a level weaker than quorum, called at call,
// that returned now.
func (h *history) addWeak(client int, in regInput, out regOutput, call int64) {
	ret := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.weak = append(h.weak, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
}

// kvClient runs register operations against the nodes' HTTP interfaces.
type kvClient struct {
	id      int
	base    func() string // http://node, for each request
	http    *http.Client
	hist    *history
	rng     *rand.Rand
	keys    registers
	written int
}

// weakLevels are the read levels that are not linearizable.
var weakLevels = []string{"leader", "lazy"}

// opTimeout bounds one HTTP request; past it the outcome is unknown.
const opTimeout = 5 * time.Second

// levels are the consistency levels whose reads are linearizable.
var levels = []string{"quorum", "all"}

// get reads key at level: its value ("" if absent) and ETag, or ok false
// when the read failed (which constrains nothing).
func (c *kvClient) get(ctx context.Context, key, level string) (string, string, bool) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/v1/kv/%s?consistency=%s", c.base(), key, level), nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return "", "", false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		return "", "", false
	case resp.StatusCode == http.StatusNotFound:
		return "", "", true
	case resp.StatusCode == http.StatusOK:
		return string(body), resp.Header.Get("ETag"), true
	}
	return "", "", false
}

// put writes value to key at level and classifies the answer. If cond is
// "*", only if the key does not exist; else if it is set, only if the
// key's ETag is still cond.
func (c *kvClient) put(ctx context.Context, key, value, level, cond string) int {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, fmt.Sprintf("%s/v1/kv/%s?consistency=%s", c.base(), key, level), strings.NewReader(value))
	switch cond {
	case "":
	case "*":
		req.Header.Set("If-None-Match", "*")
	default:
		req.Header.Set("If-Match", cond)
	}
	resp, err := c.http.Do(req)
	var opErr *net.OpError
	switch {
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return outFailed // never sent
	case err != nil:
		return outUnknown
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case resp.StatusCode/100 == 2 || resp.Header.Get("Difuse-Committed") == "true":
		return outOK
	case resp.StatusCode == http.StatusPreconditionFailed:
		return outConflict
	case resp.StatusCode/100 == 4:
		return outFailed // refused before anything was written
	}
	return outUnknown // 503: too few replicas, perhaps after the write was applied
}

// step runs one random operation: a read, a write, a read and a
// compare-and-set, a read at a weak level, or an append to the set.
func (c *kvClient) step(ctx context.Context) {
	keys := c.keys.current()
	key := keys[c.rng.IntN(len(keys))]
	level := levels[c.rng.IntN(len(levels))]
	switch c.rng.IntN(5) {
	case 4:
		c.add(ctx, c.keys.set(c.keys.generation()), level)
	case 3:
		level = weakLevels[c.rng.IntN(len(weakLevels))]
		call := c.hist.now()
		if v, _, ok := c.get(ctx, key, level); ok {
			c.hist.addWeak(c.id, regInput{Key: key, Kind: opRead, Level: level}, regOutput{Value: v}, call)
		}
	case 0:
		call := c.hist.now()
		if v, _, ok := c.get(ctx, key, level); ok {
			c.hist.add(c.id, regInput{Key: key, Kind: opRead, Level: level}, regOutput{Value: v}, call)
		}
	case 1:
		c.written++
		v := fmt.Sprintf("c%d-%d", c.id, c.written)
		call := c.hist.now()
		out := c.put(ctx, key, v, level, "")
		c.hist.add(c.id, regInput{Key: key, Kind: opWrite, Value: v, Level: level}, regOutput{Outcome: out}, call)
	default:
		call := c.hist.now()
		from, etag, ok := c.get(ctx, key, level)
		if !ok {
			return
		}
		c.hist.add(c.id, regInput{Key: key, Kind: opRead, Level: level}, regOutput{Value: from}, call)
		if etag == "" {
			return // absent: nothing to compare with
		}
		c.written++
		v := fmt.Sprintf("c%d-%d", c.id, c.written)
		call = c.hist.now()
		out := c.put(ctx, key, v, level, etag)
		c.hist.add(c.id, regInput{Key: key, Kind: opCAS, From: from, Value: v, Level: level}, regOutput{Outcome: out}, call)
	}
}

// add appends a unique element to set key: a read, then a
// compare-and-set from what it read (a create if it read nothing).
func (c *kvClient) add(ctx context.Context, key, level string) {
	call := c.hist.now()
	from, etag, ok := c.get(ctx, key, level)
	if !ok {
		return
	}
	c.hist.add(c.id, regInput{Key: key, Kind: opRead, Level: level}, regOutput{Value: from}, call)
	c.written++
	v := fmt.Sprintf("%sc%d-%d ", from, c.id, c.written)
	cond := etag
	if etag == "" {
		cond = "*"
	}
	call = c.hist.now()
	out := c.put(ctx, key, v, level, cond)
	c.hist.add(c.id, regInput{Key: key, Kind: opCAS, From: from, Value: v, Level: level}, regOutput{Outcome: out}, call)
}

// lostAdds lists the acknowledged appends to the sets that their final
// values (read after the cluster healed) do not hold.
func lostAdds(ops []porcupine.Operation, final map[string]string, isSet func(key string) bool) []string {
	var lost []string
	for _, op := range ops {
		in, out := op.Input.(regInput), op.Output.(regOutput)
		if in.Kind != opCAS || out.Outcome != outOK || !isSet(in.Key) {
			continue
		}
		f, ok := final[in.Key]
		if !ok {
			continue // unreadable: reported apart
		}
		elems := strings.Fields(in.Value)
		if e := elems[len(elems)-1]; !slices.Contains(strings.Fields(f), e) {
			lost = append(lost, fmt.Sprintf("%s: the acknowledged append of %s is not in the final value", in.Key, e))
		}
	}
	return lost
}

// lostWrites counts keys whose final value (read after the cluster
// healed) is none that could be last: every acknowledged write that ended
// before the last acknowledged write began was overwritten by it, so the
// final value must be the last one's or that of a write that overlapped
// or followed it (acknowledged or not).
func lostWrites(ops []porcupine.Operation, final map[string]string) []string {
	type w struct {
		call, ret int64
		value     string
		acked     bool
	}
	writes := map[string][]w{}
	for _, op := range ops {
		in, out := op.Input.(regInput), op.Output.(regOutput)
		if in.Kind == opRead || out.Outcome == outFailed || out.Outcome == outConflict {
			continue
		}
		writes[in.Key] = append(writes[in.Key], w{op.Call, op.Return, in.Value, out.Outcome == outOK})
	}
	var lost []string
	for key, ws := range writes {
		if _, ok := final[key]; !ok {
			continue // unreadable: reported apart
		}
		last := -1
		for i, x := range ws {
			if x.acked && (last < 0 || x.ret > ws[last].ret) {
				last = i
			}
		}
		if last < 0 {
			continue
		}
		ok := false
		for _, x := range ws {
			if (x.ret > ws[last].call || x.value == ws[last].value) && x.value == final[key] {
				ok = true
			}
		}
		if !ok {
			lost = append(lost, fmt.Sprintf("%s: final %q, last acknowledged %q", key, final[key], ws[last].value))
		}
	}
	return lost
}

// checkWeakReads checks the reads at leader and lazy level against what
// docs/txlog.md promises for them: they may be stale, but they return
// committed state only, so each returns nothing or the value of a write
// that was called before the read returned and did not fail (a failed
// write was refused before anything was written; what an unknown one
// did, a reader may see).
func checkWeakReads(ops, weak []porcupine.Operation) []string {
	type write struct {
		call   int64
		failed bool
	}
	writes := map[[2]string]write{} // key, value: values are unique
	for _, op := range ops {
		in, out := op.Input.(regInput), op.Output.(regOutput)
		if in.Kind == opRead {
			continue
		}
		failed := out.Outcome == outFailed || out.Outcome == outConflict
		writes[[2]string{in.Key, in.Value}] = write{op.Call, failed}
	}
	var bad []string
	for _, op := range weak {
		in, v := op.Input.(regInput), op.Output.(regOutput).Value
		if v == "" {
			continue
		}
		w, ok := writes[[2]string{in.Key, v}]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("%s: a %s read returned %q, which no one wrote", in.Key, in.Level, v))
		case w.failed:
			bad = append(bad, fmt.Sprintf("%s: a %s read returned %q, whose write failed", in.Key, in.Level, v))
		case w.call > op.Return:
			bad = append(bad, fmt.Sprintf("%s: a %s read returned %q before its write was called", in.Key, in.Level, v))
		}
	}
	return bad
}
