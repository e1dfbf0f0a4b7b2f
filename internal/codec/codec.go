// Package codec reads and writes the canonical binary encodings difuse
// keeps in its stores and hashes: big-endian fixed-size integers, uvarint
// counts, and byte strings prefixed with their uvarint length. A Decoder
// keeps the first error and reads zeros after it, so a decoding function
// reads straight through and checks once at the end; it never panics on
// bad input.
package codec

import (
	"encoding/binary"
	"fmt"
)

// AppendString appends s, prefixed with its length.
func AppendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Decoder reads an encoding.
type Decoder struct {
	b    []byte
	err  error
	kind error
}

// NewDecoder returns a decoder of b whose errors wrap kind.
func NewDecoder(b []byte, kind error) *Decoder { return &Decoder{b: b, kind: kind} }

// Fail records an error, unless one is already recorded, and stops
// reading.
func (d *Decoder) Fail(format string, a ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", d.kind, fmt.Sprintf(format, a...))
	}
	d.b = nil
}

// Err returns the first error.
func (d *Decoder) Err() error { return d.err }

// Left returns how many bytes are left.
func (d *Decoder) Left() int { return len(d.b) }

// Finish fails if bytes are left, and returns the first error.
func (d *Decoder) Finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.Fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

// Take returns the next n bytes, or nil if there are not that many.
func (d *Decoder) Take(n int) []byte {
	if d.err != nil || n < 0 || n > len(d.b) {
		d.Fail("truncated")
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

// Byte reads one byte.
func (d *Decoder) Byte() byte {
	if b := d.Take(1); b != nil {
		return b[0]
	}
	return 0
}

// Uint32 reads a big-endian uint32.
func (d *Decoder) Uint32() uint32 {
	if b := d.Take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

// Uint64 reads a big-endian uint64.
func (d *Decoder) Uint64() uint64 {
	if b := d.Take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// Uvarint reads a uvarint.
func (d *Decoder) Uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.Fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// Count reads a uvarint count of items of at least minSize bytes each,
// refusing one the bytes left cannot hold.
func (d *Decoder) Count(minSize int) int {
	n := d.Uvarint()
	if n > uint64(len(d.b)/max(minSize, 1)) {
		d.Fail("%d items in %d bytes", n, len(d.b))
		return 0
	}
	return int(n)
}

// String reads a length-prefixed string.
func (d *Decoder) String() string {
	n := d.Uvarint()
	if n > uint64(len(d.b)) {
		d.Fail("%d bytes announced, %d left", n, len(d.b))
		return ""
	}
	return string(d.Take(int(n)))
}
