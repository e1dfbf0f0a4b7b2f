package node

import (
	"context"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"
)

// A node's heap grows under load (Badger's memtables and table builders,
// blocks in flight) and Go keeps what it grew to: the collector's goal is
// twice the heap live at the last collection, and garbage waits for the
// next one, which an idle process runs only every two minutes. So once a
// node goes idle after work, it collects and hands the free memory back to
// the operating system, once.
const (
	// idleCheck is how often the node looks at its allocations.
	idleCheck = 15 * time.Second
	// idleBytes is what a node allocates in idleCheck at most to count as
	// idle (ring upkeep and healing's look at an idle cluster allocate a
	// little).
	idleBytes = 8 << 20
	// busyBytes is what it must have allocated since the last release for
	// another to be worth it.
	busyBytes = 64 << 20
)

// idleRelease decides, from the bytes allocated so far at each check,
// when to release memory: at the first idle check after busyBytes were
// allocated since the last release.
type idleRelease struct {
	last, released uint64
}

// check takes the allocation counter's current value and reports whether
// to release now.
func (r *idleRelease) check(allocated uint64) bool {
	idle := allocated-r.last <= idleBytes
	r.last = allocated
	if idle && allocated-r.released >= busyBytes {
		r.released = allocated
		return true
	}
	return false
}

// heapAllocated returns the bytes the Go heap has allocated since the
// process started.
func heapAllocated() uint64 {
	s := []rtmetrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64()
}

// releaseWhenIdle returns free memory to the operating system each time
// the node goes idle after work, until ctx ends.
func (n *Node) releaseWhenIdle(ctx context.Context) {
	t := time.NewTicker(idleCheck)
	defer t.Stop()
	r := idleRelease{last: heapAllocated()}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r.check(heapAllocated()) {
			debug.FreeOSMemory()
			n.log.Debug("idle: returned free memory to the operating system")
		}
	}
}
