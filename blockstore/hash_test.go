package blockstore

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

func TestHashParse(t *testing.T) {
	h := Sum([]byte("block"))
	back, err := ParseHash(h.String())
	if err != nil || back != h {
		t.Fatalf("ParseHash(%s) = %s, %v", h, back, err)
	}
	for _, bad := range []string{"", "abc", h.String()[:63] + "g", h.String() + "00"} {
		if _, err := ParseHash(bad); !errors.Is(err, ErrBadHash) {
			t.Errorf("ParseHash(%q): %v, want ErrBadHash", bad, err)
		}
	}
	if _, err := HashFromBytes(h[:31]); !errors.Is(err, ErrBadHash) {
		t.Errorf("HashFromBytes of 31 bytes: %v", err)
	}
}

// BenchmarkHash compares the block hash with SHA-256 on blocks and on
// small buffers.
func BenchmarkHash(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20} {
		buf := randomBytes(size, 1)
		b.Run(fmt.Sprintf("blake3/%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				Sum(buf)
			}
		})
		b.Run(fmt.Sprintf("sha256/%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				sha256.Sum256(buf)
			}
		})
	}
}

// randomBytes returns n bytes of a seeded pseudo-random stream.
func randomBytes(n int, seed byte) []byte {
	buf := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(buf)
	return buf
}
