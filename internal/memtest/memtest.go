// Package memtest measures what a piece of code allocates, for tests that
// hold a decoder or handler to what its input can cost.
package memtest

import "runtime"

// Allocated returns the bytes the heap handed out while f ran. Other
// goroutines' allocations count too, so tests compare it with bounds far
// from what they expect.
func Allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
