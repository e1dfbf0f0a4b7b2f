package gc

import (
	"encoding/binary"
	"testing"

	"github.com/difuse/difuse/blockstore"
)

func hashOf(i int) blockstore.Hash {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	return blockstore.Sum(b[:])
}

// Every hash added is contained; of hashes not added, about the asked
// share are.
func TestBloom(t *testing.T) {
	const n = 20000
	b := NewBloom(n, 0.01)
	for i := range n {
		b.Add(hashOf(i))
	}
	for i := range n {
		if !b.Contains(hashOf(i)) {
			t.Fatalf("hash %d added but not contained", i)
		}
	}
	fp := 0
	for i := n; i < 2*n; i++ {
		if b.Contains(hashOf(i)) {
			fp++
		}
	}
	if rate := float64(fp) / n; rate > 0.02 {
		t.Errorf("false positives %.3f, want about 0.01", rate)
	}
	if err := (&Bloom{Bits: make([]byte, 7), K: 3}).Check(); err == nil {
		t.Error("a filter of 7 bytes passed the check")
	}
}
