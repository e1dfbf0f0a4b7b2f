package node

import (
	"runtime"
	"testing"
)

// Memory goes back once per idle spell after work: not while busy, not
// while idle with nothing new allocated, and again after more work.
func TestIdleRelease(t *testing.T) {
	const mib = 1 << 20
	r := idleRelease{}
	steps := []struct {
		allocated uint64
		release   bool
	}{
		{1 * mib, false},   // idle from the start: nothing to give back
		{100 * mib, false}, // busy
		{300 * mib, false}, // busy
		{302 * mib, true},  // idle after 302 MiB: release
		{303 * mib, false}, // still idle: released already
		{304 * mib, false},
		{350 * mib, false}, // a burst of 46 MiB
		{351 * mib, false}, // idle, but less than busyBytes since the release
		{400 * mib, false}, // busy
		{405 * mib, true},  // idle after another 103 MiB: release again
	}
	for i, s := range steps {
		if got := r.check(s.allocated); got != s.release {
			t.Errorf("step %d (%d MiB allocated): release %v, want %v", i, s.allocated/mib, got, s.release)
		}
	}
}

// heapAllocated counts what the process allocates.
func TestHeapAllocated(t *testing.T) {
	before := heapAllocated()
	buf := make([]byte, 4<<20)
	runtime.KeepAlive(buf)
	if after := heapAllocated(); after-before < 4<<20 {
		t.Fatalf("heap allocations grew by %d bytes over a 4 MiB allocation", after-before)
	}
}
