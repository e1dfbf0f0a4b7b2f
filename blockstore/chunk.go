package blockstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	chunkers "github.com/PlakarKorp/go-cdc-chunkers"
	_ "github.com/PlakarKorp/go-cdc-chunkers/chunkers/fastcdc" // registers FastCDC
)

// ChunkOptions bound the blocks content-defined chunking cuts: every block
// but a stream's last is at least Min and at most Max bytes, and they
// average about Avg, which must be a power of two. Zero values take the
// defaults: 256 KiB, 1 MiB and 4 MiB.
type ChunkOptions struct {
	Min, Avg, Max int
}

// Default chunk sizes.
const (
	DefaultMinChunk = 256 << 10
	DefaultAvgChunk = 1 << 20
	DefaultMaxChunk = 4 << 20
)

func (o *ChunkOptions) setDefaults() error {
	if o.Min == 0 {
		o.Min = DefaultMinChunk
	}
	if o.Avg == 0 {
		o.Avg = DefaultAvgChunk
	}
	if o.Max == 0 {
		o.Max = DefaultMaxChunk
	}
	if o.Min < 64 || o.Min > o.Avg || o.Avg > o.Max || o.Avg&(o.Avg-1) != 0 {
		return fmt.Errorf("blockstore: chunk sizes min %d, avg %d, max %d: want 64 <= min <= avg <= max, avg a power of two", o.Min, o.Avg, o.Max)
	}
	return nil
}

// Chunker cuts a stream into blocks with FastCDC, reading at most 2×Max
// bytes ahead: it never holds a whole file. The same bytes always give the
// same cuts, so a change in the middle of a file changes only the blocks
// around it.
type Chunker struct {
	c    *chunkers.Chunker
	buf  []byte
	done bool
}

// scanBufs pools the chunkers' read-ahead buffers (2×Max bytes, 8 MiB by
// default): allocating and clearing one for every file cost a mount more
// than all the rest of a small file's flush.
var scanBufs sync.Pool // of *[]byte

// NewChunker returns a chunker reading r. Close gives its buffer back.
func NewChunker(r io.Reader, opts ChunkOptions) (*Chunker, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	var buf []byte
	if p, _ := scanBufs.Get().(*[]byte); p != nil && len(*p) >= 2*opts.Max {
		buf = *p
	} else {
		buf = make([]byte, 2*opts.Max)
	}
	c, err := chunkers.NewChunkerBuffer("fastcdc-v1.0.0", r, &chunkers.ChunkerOpts{MinSize: opts.Min, NormalSize: opts.Avg, MaxSize: opts.Max}, buf)
	if err != nil {
		return nil, fmt.Errorf("blockstore: chunker: %w", err)
	}
	return &Chunker{c: c, buf: buf}, nil
}

// Close ends the chunker's use of its buffer, for another chunker to
// take; the blocks Next returned are no longer valid.
func (c *Chunker) Close() {
	if c.buf != nil {
		buf := c.buf
		scanBufs.Put(&buf)
		c.buf, c.done = nil, true
	}
}

// Cuts returns the lengths of the blocks data is cut into: those a
// Chunker reading data returns. Data no longer than Min is one block,
// found without a chunker.
func Cuts(data []byte, opts ChunkOptions) ([]int, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if len(data) <= opts.Min {
		if len(data) == 0 {
			return nil, nil
		}
		return []int{len(data)}, nil
	}
	c, err := NewChunker(bytes.NewReader(data), opts)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var out []int
	for {
		b, err := c.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, len(b))
	}
}

// Next returns the next block, valid until the next call, or io.EOF after
// the last one. An empty stream has no blocks.
func (c *Chunker) Next() ([]byte, error) {
	if c.done {
		return nil, io.EOF
	}
	b, err := c.c.Next()
	switch {
	case errors.Is(err, io.EOF):
		c.done = true
		if len(b) > 0 {
			return b, nil
		}
		return nil, io.EOF
	case err != nil:
		return nil, fmt.Errorf("blockstore: chunking: %w", err)
	}
	return b, nil
}
