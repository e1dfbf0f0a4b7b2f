package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformed is wrapped by every error that reports a buffer the generated
// accessors could not safely read.
var ErrMalformed = errors.New("malformed message")

const (
	// maxDepth bounds the nesting of tables, so a buffer whose offsets form a
	// cycle cannot recurse forever.
	maxDepth = 64
	// maxTables bounds the number of tables visited in one buffer, so a
	// small buffer cannot make verification do unbounded work.
	maxTables = 1 << 20
	// maxBuffer keeps every offset sum below 2^31, where uint32 arithmetic
	// in the accessors cannot wrap.
	maxBuffer = 1<<31 - 1
)

// Verify checks that buf holds a well-formed table of the named type: every
// offset the generated accessors may follow, and every scalar, string,
// vector and nested table they may read, lies inside buf, and every required
// field is present. Strings, vectors and tables together take no more bytes
// than buf holds: a sender that points many offsets at one payload (which
// this package's builders never do) is refused, so decoding a message
// costs in proportion to its size. It never panics. Errors wrap
// ErrMalformed.
func (s *Schema) Verify(table string, buf []byte) error {
	fields, ok := s.tables[table]
	if !ok {
		return fmt.Errorf("wire: no table %q in the schema", table)
	}
	if len(buf) > maxBuffer {
		return fmt.Errorf("%w: %s: %d bytes is too large", ErrMalformed, table, len(buf))
	}
	v := &verifier{s: s, buf: buf}
	root, err := v.uoffset(0)
	if err != nil {
		return fmt.Errorf("%w: %s: root: %v", ErrMalformed, table, err)
	}
	if err := v.table(table, fields, root, 0); err != nil {
		return fmt.Errorf("%w: %s%v", ErrMalformed, table, err)
	}
	return nil
}

type verifier struct {
	s      *Schema
	buf    []byte
	tables int
	bytes  int // taken by the strings, vectors and tables verified so far
}

// take counts n bytes of strings, vectors or tables, failing once they add
// up to more than the buffer: some of them share bytes.
func (v *verifier) take(n int) error {
	if v.bytes += n; v.bytes > len(v.buf) {
		return fmt.Errorf(": objects take more than the %d-byte buffer (shared offsets)", len(v.buf))
	}
	return nil
}

// need fails unless buf[pos:pos+n] exists.
func (v *verifier) need(pos, n int) error {
	if pos < 0 || n < 0 || pos > len(v.buf) || n > len(v.buf)-pos {
		return fmt.Errorf("%d bytes at offset %d exceed the %d-byte buffer", n, pos, len(v.buf))
	}
	return nil
}

// uoffset reads the unsigned offset stored at pos and returns the position it
// points to.
func (v *verifier) uoffset(pos int) (int, error) {
	if err := v.need(pos, 4); err != nil {
		return 0, err
	}
	target := pos + int(binary.LittleEndian.Uint32(v.buf[pos:]))
	if err := v.need(target, 0); err != nil {
		return 0, err
	}
	return target, nil
}

// table verifies the table of the given type at pos. Errors name the path of
// fields that led to the fault, starting with a dot.
func (v *verifier) table(name string, fields []field, pos, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf(": tables nested deeper than %d", maxDepth)
	}
	if v.tables++; v.tables > maxTables {
		return fmt.Errorf(": more than %d tables", maxTables)
	}
	if err := v.need(pos, 4); err != nil {
		return fmt.Errorf(": table: %v", err)
	}
	vt := pos - int(int32(binary.LittleEndian.Uint32(v.buf[pos:])))
	if err := v.need(vt, 4); err != nil {
		return fmt.Errorf(": vtable: %v", err)
	}
	vtSize := int(binary.LittleEndian.Uint16(v.buf[vt:]))
	objSize := int(binary.LittleEndian.Uint16(v.buf[vt+2:]))
	if vtSize < 4 || vtSize%2 != 0 {
		return fmt.Errorf(": vtable size %d", vtSize)
	}
	if err := v.need(vt, vtSize); err != nil {
		return fmt.Errorf(": vtable: %v", err)
	}
	if objSize < 4 {
		return fmt.Errorf(": table size %d", objSize)
	}
	if err := v.need(pos, objSize); err != nil {
		return fmt.Errorf(": table: %v", err)
	}
	if err := v.take(objSize); err != nil {
		return err
	}
	for i, f := range fields {
		slot := 4 + 2*i
		fo := 0
		if slot+2 <= vtSize {
			fo = int(binary.LittleEndian.Uint16(v.buf[vt+slot:]))
		}
		if fo == 0 {
			if f.required {
				return fmt.Errorf(".%s: required field missing", f.name)
			}
			continue
		}
		if err := v.field(f.typ, pos+fo, fo, objSize, depth); err != nil {
			return fmt.Errorf(".%s%v", f.name, err)
		}
	}
	return nil
}

// field verifies one field stored at pos, fo bytes into a table of objSize
// bytes.
func (v *verifier) field(t fieldType, pos, fo, objSize, depth int) error {
	inline := 4 // strings, tables and vectors are stored as offsets
	if t.kind == kindScalar || t.kind == kindStruct {
		inline = t.size
	}
	if fo+inline > objSize {
		return fmt.Errorf(": %d bytes at %d overrun the %d-byte table", inline, fo, objSize)
	}
	switch t.kind {
	case kindScalar, kindStruct:
		return nil
	default:
		target, err := v.uoffset(pos)
		if err != nil {
			return fmt.Errorf(": %v", err)
		}
		return v.value(t, target, depth)
	}
}

// value verifies the string, vector or table an offset points to.
func (v *verifier) value(t fieldType, pos, depth int) error {
	switch t.kind {
	case kindString:
		return v.vector(pos, 1)
	case kindTable:
		return v.table(t.table, v.s.tables[t.table], pos, depth+1)
	case kindVector:
		switch e := t.elem; e.kind {
		case kindScalar, kindStruct:
			return v.vector(pos, e.size)
		default:
			if err := v.vector(pos, 4); err != nil {
				return err
			}
			n := int(binary.LittleEndian.Uint32(v.buf[pos:]))
			for i := range n {
				elem := pos + 4 + 4*i
				target, err := v.uoffset(elem)
				if err != nil {
					return fmt.Errorf("[%d]: %v", i, err)
				}
				if err := v.value(*e, target, depth); err != nil {
					return fmt.Errorf("[%d]%v", i, err)
				}
			}
			return nil
		}
	}
	return fmt.Errorf(": cannot verify kind %d", t.kind)
}

// vector verifies a length-prefixed run of n elements of size bytes at pos.
func (v *verifier) vector(pos, size int) error {
	if err := v.need(pos, 4); err != nil {
		return fmt.Errorf(": length: %v", err)
	}
	n := int(binary.LittleEndian.Uint32(v.buf[pos:]))
	if n > (len(v.buf)-pos-4)/size {
		return fmt.Errorf(": %d elements of %d bytes at %d exceed the %d-byte buffer", n, size, pos+4, len(v.buf))
	}
	return v.take(4 + n*size)
}
