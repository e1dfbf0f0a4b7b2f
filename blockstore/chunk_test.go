package blockstore

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
)

// chunks cuts data and returns copies of the blocks.
func chunks(t testing.TB, data []byte, opts ChunkOptions) [][]byte {
	t.Helper()
	c, err := NewChunker(bytes.NewReader(data), opts)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for {
		b, err := c.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, bytes.Clone(b))
	}
}

// checkChunks checks the chunker's contract: blocks concatenate to the
// input, and every block but the last is within min..max.
func checkChunks(t testing.TB, data []byte, got [][]byte, opts ChunkOptions) {
	t.Helper()
	if err := opts.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.Join(got, nil), data) {
		t.Fatalf("%d blocks do not concatenate to the %d-byte input", len(got), len(data))
	}
	for i, b := range got {
		if len(b) == 0 || len(b) > opts.Max || (i < len(got)-1 && len(b) < opts.Min) {
			t.Fatalf("block %d of %d has %d bytes (min %d, max %d)", i, len(got), len(b), opts.Min, opts.Max)
		}
	}
}

// shared returns the fraction of b's bytes that lie in blocks a also has.
func shared(a, b [][]byte) float64 {
	have := map[Hash]bool{}
	for _, x := range a {
		have[Sum(x)] = true
	}
	n, total := 0, 0
	for _, x := range b {
		total += len(x)
		if have[Sum(x)] {
			n += len(x)
		}
	}
	return float64(n) / float64(total)
}

func TestChunkerContract(t *testing.T) {
	small := ChunkOptions{Min: 1 << 10, Avg: 4 << 10, Max: 16 << 10}
	for _, n := range []int{0, 1, 1023, 1 << 10, 100 << 10, 1 << 20} {
		data := randomBytes(n, byte(n))
		got := chunks(t, data, small)
		checkChunks(t, data, got, small)
		if n == 0 && len(got) != 0 {
			t.Errorf("an empty stream gave %d blocks", len(got))
		}
	}
	zeros := make([]byte, 1<<20) // no content to cut on: every block is max
	got := chunks(t, zeros, small)
	checkChunks(t, zeros, got, small)
}

func TestChunkerDefaultsAndBadOptions(t *testing.T) {
	data := randomBytes(16<<20, 3)
	got := chunks(t, data, ChunkOptions{})
	checkChunks(t, data, got, ChunkOptions{})
	if avg := len(data) / len(got); avg < 512<<10 || avg > 2<<20 {
		t.Errorf("average block %d bytes, want about 1 MiB", avg)
	}
	for _, o := range []ChunkOptions{{Min: 10}, {Avg: 3 << 20}, {Min: 2 << 20, Avg: 1 << 20}, {Max: 512 << 10}} {
		if _, err := NewChunker(bytes.NewReader(nil), o); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
}

// Inserting a byte at the front or appending at the end changes only the
// blocks near the change.
func TestChunkerReuse(t *testing.T) {
	size := 64 << 20
	if testing.Short() {
		size = 16 << 20
	}
	data := randomBytes(size, 9)
	base := chunks(t, data, ChunkOptions{})

	inserted := append([]byte{42}, data...)
	if f := shared(base, chunks(t, inserted, ChunkOptions{})); f < 0.9 {
		t.Errorf("one byte inserted at offset 0: %.1f%% of bytes in reused blocks, want at least 90%%", 100*f)
	}
	appended := append(bytes.Clone(data), randomBytes(1<<20, 10)...)
	after := chunks(t, appended, ChunkOptions{})
	newBlocks := 0
	have := map[Hash]bool{}
	for _, b := range base {
		have[Sum(b)] = true
	}
	for _, b := range after {
		if !have[Sum(b)] {
			newBlocks++
		}
	}
	if newBlocks > 2 {
		t.Errorf("1 MiB appended: %d new blocks of %d, want at most 2", newBlocks, len(after))
	}
}

func FuzzChunker(f *testing.F) {
	f.Add([]byte("hello"), uint16(64))
	f.Add(randomBytes(70<<10, 1), uint16(1024))
	f.Fuzz(func(t *testing.T, data []byte, minSize uint16) {
		opts := ChunkOptions{Min: max(64, int(minSize)%2048), Avg: 2048, Max: 8192}
		checkChunks(t, data, chunks(t, data, opts), opts)
	})
}

// BenchmarkChunkAndHash measures cutting and hashing one stream on one
// core.
func BenchmarkChunkAndHash(b *testing.B) {
	data := randomBytes(64<<20, 5)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		c, err := NewChunker(bytes.NewReader(data), ChunkOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for {
			blk, err := c.Next()
			if err != nil {
				break
			}
			Sum(blk)
		}
	}
}

// Cuts gives the lengths the chunker's blocks have, short data included,
// and chunkers reusing a pooled buffer cut as a fresh one does.
func TestCuts(t *testing.T) {
	data := make([]byte, 12<<20)
	rand.NewChaCha8([32]byte{3, 4}).Read(data)
	for _, n := range []int{0, 1, DefaultMinChunk - 1, DefaultMinChunk, DefaultMinChunk + 1, 3 << 20, len(data)} {
		for range 2 { // the second time on a buffer from the pool
			got, err := Cuts(data[:n], ChunkOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var want []int
			for _, b := range chunks(t, data[:n], ChunkOptions{}) {
				want = append(want, len(b))
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%d bytes: cuts %v, the chunker's blocks %v", n, got, want)
			}
		}
	}
}
