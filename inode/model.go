package inode

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/difuse/difuse/blockstore"
)

// ID names an inode: the partition its record lives in (that of the
// directory it was created in) and its number there.
type ID struct {
	Part uint64
	Num  uint64
}

// Root is the root directory's inode; its record is alone in partition 0,
// and its entries live in partition RootChildren.
var Root = ID{Part: 0, Num: 1}

// RootChildren is the partition of the root directory's entries.
const RootChildren uint64 = 1

// PartitionName returns the transaction-log partition of part.
func PartitionName(part uint64) string { return fmt.Sprintf("fs/%016x", part) }

// String returns "part:num" in hex.
func (id ID) String() string {
	return strconv.FormatUint(id.Part, 16) + ":" + strconv.FormatUint(id.Num, 16)
}

// Record names of a partition: inodes under "i/", directory entries under
// "d/".
const (
	inodePrefix = "i/"
	entryPrefix = "d/"
)

// InodeRecord returns the record name of inode num in its partition.
func InodeRecord(num uint64) string { return fmt.Sprintf("%s%016x", inodePrefix, num) }

// rawMark starts the record name of an entry whose name is not valid
// UTF-8 (record names must be): the name follows in hex. No real name
// starts with "/", so none can collide.
const rawMark = "/"

// EntryRecord returns the record name of the entry called name in a
// directory's partition.
func EntryRecord(name string) string {
	if utf8.ValidString(name) {
		return entryPrefix + name
	}
	return entryPrefix + rawMark + hex.EncodeToString([]byte(name))
}

// EntryName returns the entry's name from its record name.
func EntryName(record string) (string, bool) {
	name, ok := strings.CutPrefix(record, entryPrefix)
	if !ok {
		return "", false
	}
	if raw, isRaw := strings.CutPrefix(name, rawMark); isRaw {
		b, err := hex.DecodeString(raw)
		return string(b), err == nil
	}
	return name, true
}

// Type is an inode's file type.
type Type uint8

// File types.
const (
	TypeFile Type = iota + 1
	TypeDir
	TypeSymlink
)

// Extent maps Len bytes of a file, from Off, to a block.
type Extent struct {
	Off, Len uint64
	Block    blockstore.Hash
}

// Attr is an inode's state.
type Attr struct {
	Type Type
	// Mode holds the permission bits (and setuid, setgid, sticky).
	Mode                uint32
	UID, GID            uint32
	Size                uint64
	Nlink               uint32
	Atime, Mtime, Ctime int64 // Unix nanoseconds
	// Children is a directory's partition of entries.
	Children uint64
	// Target is a symlink's target.
	Target string
	// Inline holds a small file's bytes; a larger one has Extents, sorted
	// by offset, not overlapping; bytes between extents (and past the last,
	// up to Size) are zeros.
	Inline  []byte
	Extents []Extent
	// Xattrs are the extended attributes.
	Xattrs map[string][]byte
}

// Entry is a directory entry: the inode it names and its type.
type Entry struct {
	ID   ID
	Type Type
}

// errDecode is wrapped by every decoding error.
var errDecode = errors.New("inode: malformed record")

const (
	attrVersion  = 1
	entryVersion = 1
)

// EncodeAttr returns an inode record's value.
func EncodeAttr(a Attr) []byte {
	b := make([]byte, 0, 96+len(a.Target)+len(a.Inline)+48*len(a.Extents))
	b = append(b, attrVersion, byte(a.Type))
	for _, v := range []uint32{a.Mode, a.UID, a.GID, a.Nlink} {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	for _, v := range []uint64{a.Size, uint64(a.Atime), uint64(a.Mtime), uint64(a.Ctime), a.Children} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	b = appendBytes(b, []byte(a.Target))
	b = appendBytes(b, a.Inline)
	b = binary.AppendUvarint(b, uint64(len(a.Extents)))
	for _, e := range a.Extents {
		b = binary.BigEndian.AppendUint64(b, e.Off)
		b = binary.BigEndian.AppendUint64(b, e.Len)
		b = append(b, e.Block[:]...)
	}
	keys := make([]string, 0, len(a.Xattrs))
	for k := range a.Xattrs {
		keys = append(keys, k)
	}
	slices.Sort(keys) // one encoding for one state
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendBytes(b, []byte(k))
		b = appendBytes(b, a.Xattrs[k])
	}
	return b
}

// DecodeAttr reads an inode record's value. It never panics.
func DecodeAttr(b []byte) (Attr, error) {
	d := decoder{b: b}
	var a Attr
	if v := d.byte(); v != attrVersion {
		return a, fmt.Errorf("%w: inode version %d", errDecode, v)
	}
	a.Type = Type(d.byte())
	a.Mode, a.UID, a.GID, a.Nlink = d.uint32(), d.uint32(), d.uint32(), d.uint32()
	a.Size, a.Atime, a.Mtime, a.Ctime, a.Children = d.uint64(), int64(d.uint64()), int64(d.uint64()), int64(d.uint64()), d.uint64()
	a.Target = string(d.bytes())
	if in := d.bytes(); len(in) > 0 {
		a.Inline = in
	}
	n := d.count(48)
	for range n {
		e := Extent{Off: d.uint64(), Len: d.uint64()}
		copy(e.Block[:], d.take(32))
		a.Extents = append(a.Extents, e)
	}
	if n := d.count(2); n > 0 {
		a.Xattrs = make(map[string][]byte, n)
		for range n {
			k := string(d.bytes())
			a.Xattrs[k] = d.bytes()
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err == nil && (a.Type < TypeFile || a.Type > TypeSymlink) {
		d.fail("type %d", a.Type)
	}
	return a, d.err
}

// EncodeEntry returns a directory entry record's value.
func EncodeEntry(e Entry) []byte {
	b := []byte{entryVersion, byte(e.Type)}
	b = binary.BigEndian.AppendUint64(b, e.ID.Part)
	return binary.BigEndian.AppendUint64(b, e.ID.Num)
}

// DecodeEntry reads a directory entry record's value.
func DecodeEntry(b []byte) (Entry, error) {
	d := decoder{b: b}
	if v := d.byte(); v != entryVersion {
		return Entry{}, fmt.Errorf("%w: entry version %d", errDecode, v)
	}
	e := Entry{Type: Type(d.byte())}
	e.ID.Part, e.ID.Num = d.uint64(), d.uint64()
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err == nil && (e.Type < TypeFile || e.Type > TypeSymlink) {
		d.fail("type %d", e.Type)
	}
	return e, d.err
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(f string, a ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errDecode, fmt.Sprintf(f, a...))
	}
	d.b = nil
}

func (d *decoder) take(n int) []byte {
	if d.err != nil || n < 0 || n > len(d.b) {
		d.fail("truncated")
		return make([]byte, max(n, 0))
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) byte() byte     { return d.take(1)[0] }
func (d *decoder) uint32() uint32 { return binary.BigEndian.Uint32(d.take(4)) }
func (d *decoder) uint64() uint64 { return binary.BigEndian.Uint64(d.take(8)) }

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count of items of at least minSize bytes each, refusing
// one the rest of the record cannot hold.
func (d *decoder) count(minSize int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/minSize) {
		d.fail("%d items in %d bytes", n, len(d.b))
		return 0
	}
	return int(n)
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("%d bytes announced, %d left", n, len(d.b))
		return nil
	}
	return slices.Clone(d.take(int(n)))
}
