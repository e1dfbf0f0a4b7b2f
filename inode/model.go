package inode

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/internal/codec"
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

// PartitionPrefix starts the name of every filesystem partition.
const PartitionPrefix = "fs/"

// PartitionName returns the transaction-log partition of part.
func PartitionName(part uint64) string { return fmt.Sprintf("%s%016x", PartitionPrefix, part) }

// String returns "part:num" in hex.
func (id ID) String() string {
	return strconv.FormatUint(id.Part, 16) + ":" + strconv.FormatUint(id.Num, 16)
}

// Record names of a partition: inodes under InodePrefix, directory
// entries under "d/".
const (
	InodePrefix = "i/"
	entryPrefix = "d/"
)

// InodeRecord returns the record name of inode num in its partition.
func InodeRecord(num uint64) string { return fmt.Sprintf("%s%016x", InodePrefix, num) }

// inodeNum returns the number of the inode whose record is named record.
func inodeNum(record string) (uint64, bool) {
	digits, ok := strings.CutPrefix(record, InodePrefix)
	if !ok || len(digits) != 16 {
		return 0, false
	}
	num, err := strconv.ParseUint(digits, 16, 64)
	return num, err == nil
}

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

// File types. Fifos, sockets and devices are inodes like any other, with
// no content: what they stand for is the kernel's (a device's is Rdev).
const (
	TypeFile Type = iota + 1
	TypeDir
	TypeSymlink
	TypeFifo
	TypeSocket
	TypeCharDev
	TypeBlockDev
	lastType = TypeBlockDev
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
	// Rdev is a character or block device's number.
	Rdev uint64
	// Inline holds a small file's bytes; a larger one has Extents, sorted
	// by offset, not overlapping, each at most a page span long; bytes
	// between extents (and past the last, up to Size) are zeros: holes.
	Inline  []byte
	Extents []Extent
	// PageShift, when set, makes the file paged: its extents are kept in
	// page records of their own (see PageRecord) instead of Extents, one
	// page for each span of 1<<PageShift bytes of the file that holds
	// any, so that a change to a large file rewrites the pages it touches
	// and not the whole list. An extent is in the page of its offset.
	PageShift uint8
	// Pages lists a paged file's pages, by index; a span with no page is
	// a hole. PageVer is the last page version the file issued: versions
	// only grow, so a version names one content for the file's life, and
	// a page's new version sorts after its old one (a listing under way
	// meets one of them).
	Pages   []PageRef
	PageVer uint64
	// Xattrs are the extended attributes.
	Xattrs map[string][]byte
}

// PageRef names one page of a paged file: its index (the span of the
// file from Index<<PageShift it covers) and its version. A page's record
// is written once per version and never changed, so a reader that holds
// an inode reads exactly the pages it names, and may keep them.
type PageRef struct {
	Index, Ver uint64
}

// Paged reports whether a's extents are kept in pages.
func (a *Attr) Paged() bool { return a.PageShift != 0 }

// Entry is a directory entry: the inode it names and its type.
type Entry struct {
	ID   ID
	Type Type
	// Move marks an entry that a rename across directories is moving
	// away; nil on every entry callers of FS see.
	Move *Move
}

// Move is the mark a rename across directories puts on the entry it moves
// before it commits: the rename's decision record, in the destination's
// partition, says whether the move happened.
type Move struct {
	Txid uint64
	// Dest is the partition that holds the decision record.
	Dest uint64
	// Since is when the move began (Unix nanoseconds); a move left
	// undecided for long is aborted by the next reader.
	Since int64
	// Replace, for an exchange (RENAME_EXCHANGE), is the entry that takes
	// this one's place once the move commits; nil for a move, after which
	// the entry is gone.
	Replace *Entry
}

// errDecode is wrapped by every decoding error.
var errDecode = errors.New("inode: malformed record")

const (
	// attrV1 is the encoding without Rdev, PageShift and Pages, still read.
	attrV1       = 1
	attrVersion  = 2
	entryVersion = 1
	// movingVersion marks an entry encoding followed by a Move;
	// swappingVersion one followed by a Move and the entry it swaps in.
	movingVersion   = 2
	swappingVersion = 3
)

// EncodeAttr returns an inode record's value.
func EncodeAttr(a Attr) []byte {
	b := make([]byte, 0, 96+len(a.Target)+len(a.Inline)+48*len(a.Extents))
	b = append(b, attrVersion, byte(a.Type))
	for _, v := range []uint32{a.Mode, a.UID, a.GID, a.Nlink} {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	for _, v := range []uint64{a.Size, uint64(a.Atime), uint64(a.Mtime), uint64(a.Ctime), a.Children, a.Rdev} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	b = codec.AppendString(b, a.Target)
	b = codec.AppendString(b, string(a.Inline))
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
		b = codec.AppendString(b, k)
		b = codec.AppendString(b, string(a.Xattrs[k]))
	}
	b = append(b, a.PageShift)
	b = binary.AppendUvarint(b, a.PageVer)
	b = binary.AppendUvarint(b, uint64(len(a.Pages)))
	prev := uint64(0)
	for i, p := range a.Pages {
		if i == 0 {
			b = binary.AppendUvarint(b, p.Index)
		} else {
			b = binary.AppendUvarint(b, p.Index-prev-1)
		}
		prev = p.Index
		b = binary.BigEndian.AppendUint64(b, p.Ver)
	}
	return b
}

// Page spans a paged file may have: 4 KiB to 1 TiB.
const (
	minPageShift = 12
	maxPageShift = 40
)

// DecodeAttr reads an inode record's value. It never panics.
func DecodeAttr(b []byte) (Attr, error) {
	d := codec.NewDecoder(b, errDecode)
	var a Attr
	v := d.Byte()
	if v != attrVersion && v != attrV1 {
		return a, fmt.Errorf("%w: inode version %d", errDecode, v)
	}
	a.Type = Type(d.Byte())
	a.Mode, a.UID, a.GID, a.Nlink = d.Uint32(), d.Uint32(), d.Uint32(), d.Uint32()
	a.Size, a.Atime, a.Mtime, a.Ctime, a.Children = d.Uint64(), int64(d.Uint64()), int64(d.Uint64()), int64(d.Uint64()), d.Uint64()
	if v == attrVersion {
		a.Rdev = d.Uint64()
	}
	a.Target = d.String()
	if in := d.String(); in != "" {
		a.Inline = []byte(in)
	}
	n := d.Count(48)
	for range n {
		e := Extent{Off: d.Uint64(), Len: d.Uint64()}
		copy(e.Block[:], d.Take(32))
		a.Extents = append(a.Extents, e)
	}
	if n := d.Count(2); n > 0 {
		a.Xattrs = make(map[string][]byte, min(n, 16)) // the map grows with what parses
		for range n {
			k := d.String()
			a.Xattrs[k] = []byte(d.String())
		}
	}
	if v == attrVersion {
		a.PageShift = d.Byte()
		a.PageVer = d.Uvarint()
		n := d.Count(9)
		for i := range n {
			idx := d.Uvarint()
			if i > 0 {
				prev := a.Pages[i-1].Index
				if idx >= ^prev {
					d.Fail("page index overflows")
				}
				idx += prev + 1
			}
			a.Pages = append(a.Pages, PageRef{Index: idx, Ver: d.Uint64()})
		}
	}
	if err := d.Finish(); err != nil {
		return a, err
	}
	switch {
	case a.Type < TypeFile || a.Type > lastType:
		return a, fmt.Errorf("%w: type %d", errDecode, a.Type)
	case a.PageShift != 0 && (a.PageShift < minPageShift || a.PageShift > maxPageShift):
		return a, fmt.Errorf("%w: page shift %d", errDecode, a.PageShift)
	case a.PageShift == 0 && (len(a.Pages) > 0 || a.PageVer != 0), a.PageShift != 0 && len(a.Extents) > 0:
		return a, fmt.Errorf("%w: pages and extents mixed", errDecode)
	}
	for _, p := range a.Pages {
		if p.Index > math.MaxUint64>>a.PageShift || p.Ver > a.PageVer {
			return a, fmt.Errorf("%w: page %d version %d: past the largest file, or not issued", errDecode, p.Index, p.Ver)
		}
	}
	return a, nil
}

// EncodeEntry returns a directory entry record's value.
func EncodeEntry(e Entry) []byte {
	v := byte(entryVersion)
	switch {
	case e.Move != nil && e.Move.Replace != nil:
		v = swappingVersion
	case e.Move != nil:
		v = movingVersion
	}
	b := []byte{v, byte(e.Type)}
	b = binary.BigEndian.AppendUint64(b, e.ID.Part)
	b = binary.BigEndian.AppendUint64(b, e.ID.Num)
	if e.Move != nil {
		b = binary.BigEndian.AppendUint64(b, e.Move.Txid)
		b = binary.BigEndian.AppendUint64(b, e.Move.Dest)
		b = binary.BigEndian.AppendUint64(b, uint64(e.Move.Since))
		if r := e.Move.Replace; r != nil {
			b = append(b, byte(r.Type))
			b = binary.BigEndian.AppendUint64(b, r.ID.Part)
			b = binary.BigEndian.AppendUint64(b, r.ID.Num)
		}
	}
	return b
}

// DecodeEntry reads a directory entry record's value.
func DecodeEntry(b []byte) (Entry, error) {
	d := codec.NewDecoder(b, errDecode)
	v := d.Byte()
	if v < entryVersion || v > swappingVersion {
		return Entry{}, fmt.Errorf("%w: entry version %d", errDecode, v)
	}
	e := Entry{Type: Type(d.Byte())}
	e.ID.Part, e.ID.Num = d.Uint64(), d.Uint64()
	if v >= movingVersion {
		e.Move = &Move{Txid: d.Uint64(), Dest: d.Uint64(), Since: int64(d.Uint64())}
	}
	if v == swappingVersion {
		r := &Entry{Type: Type(d.Byte())}
		r.ID.Part, r.ID.Num = d.Uint64(), d.Uint64()
		e.Move.Replace = r
		if r.Type < TypeFile || r.Type > lastType {
			return e, fmt.Errorf("%w: type %d", errDecode, r.Type)
		}
	}
	if err := d.Finish(); err != nil {
		return e, err
	}
	if e.Type < TypeFile || e.Type > lastType {
		return e, fmt.Errorf("%w: type %d", errDecode, e.Type)
	}
	return e, nil
}
