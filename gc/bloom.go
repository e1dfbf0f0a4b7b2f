package gc

import (
	"encoding/binary"
	"errors"
	"math"

	"github.com/difuse/difuse/blockstore"
)

// Bloom is a Bloom filter of block hashes: Contains never says no for a
// hash added, and says yes for one not added with a small probability.
// The collector keeps the blocks its filter contains, so a false yes only
// keeps a garbage block until a later cycle.
type Bloom struct {
	Bits []byte // the filter, a multiple of 8 bytes
	K    int    // hash functions
}

// NewBloom returns a filter for n hashes with a false-positive rate of
// about p.
func NewBloom(n int, p float64) *Bloom {
	n = max(n, 1)
	m := int(math.Ceil(-float64(n) * math.Log(p) / (math.Ln2 * math.Ln2)))
	m = (m + 63) / 64 * 64
	k := max(1, int(math.Round(float64(m)/float64(n)*math.Ln2)))
	return &Bloom{Bits: make([]byte, m/8), K: k}
}

// errBloom marks a malformed filter from the network.
var errBloom = errors.New("gc: malformed Bloom filter")

// Check validates a filter received from another host.
func (b *Bloom) Check() error {
	if len(b.Bits) == 0 || len(b.Bits)%8 != 0 || b.K < 1 || b.K > 64 {
		return errBloom
	}
	return nil
}

// positions calls fn with the K bit positions of h. Block hashes are
// SHA-256, uniform already: two of their 64-bit words make the K positions
// by double hashing.
func (b *Bloom) positions(h blockstore.Hash, fn func(uint64) bool) {
	m := uint64(len(b.Bits)) * 8
	h1, h2 := binary.LittleEndian.Uint64(h[0:8]), binary.LittleEndian.Uint64(h[8:16])|1
	for i := range uint64(b.K) {
		if !fn((h1 + i*h2) % m) {
			return
		}
	}
}

// Add adds h.
func (b *Bloom) Add(h blockstore.Hash) {
	b.positions(h, func(p uint64) bool {
		b.Bits[p/8] |= 1 << (p % 8)
		return true
	})
}

// Contains reports whether h may have been added.
func (b *Bloom) Contains(h blockstore.Hash) bool {
	in := true
	b.positions(h, func(p uint64) bool {
		in = b.Bits[p/8]&(1<<(p%8)) != 0
		return in
	})
	return in
}
