package blockstore

import (
	"errors"
	"fmt"
	"io"

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
	done bool
}

// NewChunker returns a chunker reading r.
func NewChunker(r io.Reader, opts ChunkOptions) (*Chunker, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	c, err := chunkers.NewChunker("fastcdc-v1.0.0", r, &chunkers.ChunkerOpts{MinSize: opts.Min, NormalSize: opts.Avg, MaxSize: opts.Max})
	if err != nil {
		return nil, fmt.Errorf("blockstore: chunker: %w", err)
	}
	return &Chunker{c: c}, nil
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
