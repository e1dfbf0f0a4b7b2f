package inode

import (
	"errors"
	"reflect"
	"testing"
	"unicode/utf8"

	"github.com/difuse/difuse/blockstore"
)

func sampleAttr() Attr {
	return Attr{
		Type: TypeFile, Mode: 0o4755, UID: 1000, GID: 100, Size: 3 << 20, Nlink: 2,
		Atime: 1, Mtime: 2, Ctime: -3, Children: 0,
		Extents: []Extent{
			{Off: 0, Len: 1 << 20, Block: blockstore.Sum([]byte("a"))},
			{Off: 2 << 20, Len: 1 << 20, Block: blockstore.Sum([]byte("b"))},
		},
		Xattrs: map[string][]byte{"user.a": []byte("1"), "user.b": {}},
	}
}

func TestAttrRoundTrip(t *testing.T) {
	for _, a := range []Attr{
		sampleAttr(),
		{Type: TypeDir, Mode: 0o755, Nlink: 1, Children: 0xdeadbeef},
		{Type: TypeSymlink, Mode: 0o777, Nlink: 1, Target: "../x/y", Size: 6},
		{Type: TypeFile, Mode: 0o644, Nlink: 1, Inline: []byte("small file"), Size: 10},
		{Type: TypeFile, Mode: 0o644, Nlink: 1, Size: 1 << 40, PageShift: 26, PageVer: 9, Pages: []PageRef{{0, 3}, {7, 9}, {1 << 14, 1}}},
		{Type: TypeCharDev, Mode: 0o600, Nlink: 1, Rdev: 0x0501},
	} {
		b := EncodeAttr(a)
		got, err := DecodeAttr(b)
		if err != nil || !reflect.DeepEqual(got, a) {
			t.Errorf("round trip of %+v = %+v, %v", a, got, err)
		}
	}
	// One state, one encoding, whatever the map's order.
	if string(EncodeAttr(sampleAttr())) != string(EncodeAttr(sampleAttr())) {
		t.Error("the same attributes encode differently")
	}
}

func TestDecodeMalformed(t *testing.T) {
	good := EncodeAttr(sampleAttr())
	for i := range len(good) {
		if _, err := DecodeAttr(good[:i]); !errors.Is(err, errDecode) {
			t.Fatalf("a %d-byte prefix decoded: %v", i, err)
		}
	}
	if _, err := DecodeAttr(append(good, 0)); !errors.Is(err, errDecode) {
		t.Error("trailing bytes accepted")
	}
	bad := append([]byte{}, good...)
	bad[1] = 9
	if _, err := DecodeAttr(bad); !errors.Is(err, errDecode) {
		t.Error("an unknown type accepted")
	}
	e := Entry{ID: ID{Part: 7, Num: 9}, Type: TypeDir}
	if got, err := DecodeEntry(EncodeEntry(e)); err != nil || got != e {
		t.Errorf("entry round trip = %+v, %v", got, err)
	}
	if _, err := DecodeEntry(EncodeEntry(e)[:10]); !errors.Is(err, errDecode) {
		t.Error("a truncated entry decoded")
	}
	moving := Entry{ID: ID{Part: 7, Num: 9}, Type: TypeFile, Move: &Move{Txid: 5, Dest: 11, Since: -1}}
	if got, err := DecodeEntry(EncodeEntry(moving)); err != nil || !reflect.DeepEqual(got, moving) {
		t.Errorf("moving entry round trip = %+v, %v", got, err)
	}
	if _, err := DecodeEntry(EncodeEntry(moving)[:30]); !errors.Is(err, errDecode) {
		t.Error("a truncated moving entry decoded")
	}
}

func TestNames(t *testing.T) {
	if PartitionName(RootChildren) != "fs/0000000000000001" || InodeRecord(255) != "i/00000000000000ff" {
		t.Errorf("names: %s %s", PartitionName(RootChildren), InodeRecord(255))
	}
	if n, ok := EntryName(EntryRecord("a/b")); !ok || n != "a/b" {
		t.Errorf("EntryName = %q, %v", n, ok)
	}
	raw := "caf\xe9.txt" // Latin-1, not UTF-8
	if r := EntryRecord(raw); !utf8.ValidString(r) {
		t.Errorf("record name %q is not UTF-8", r)
	} else if n, ok := EntryName(r); !ok || n != raw {
		t.Errorf("EntryName(EntryRecord(%q)) = %q, %v", raw, n, ok)
	}
	if _, ok := EntryName(InodeRecord(1)); ok {
		t.Error("an inode record taken for an entry")
	}
}

func TestPageRoundTrip(t *testing.T) {
	ext := []Extent{{Off: 5, Len: 10, Block: blockstore.Sum([]byte("a"))}, {Off: 15, Len: 1, Block: blockstore.Sum([]byte("b"))}}
	if got, err := DecodePage(EncodePage(ext)); err != nil || !reflect.DeepEqual(got, ext) {
		t.Errorf("page round trip = %+v, %v", got, err)
	}
	if _, err := DecodePage(EncodePage([]Extent{ext[1], ext[0]})); !errors.Is(err, errDecode) {
		t.Error("extents out of order accepted")
	}
	if num, idx, ver, ok := ParsePageRecord(PageRecord(1, 2, 3)); !ok || num != 1 || idx != 2 || ver != 3 {
		t.Errorf("page record name: %d %d %d %v", num, idx, ver, ok)
	}
	paged := Attr{Type: TypeFile, PageShift: 20, PageVer: 1, Pages: []PageRef{{1, 2}}}
	if _, err := DecodeAttr(EncodeAttr(paged)); !errors.Is(err, errDecode) {
		t.Error("a page version never issued accepted")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(EncodeAttr(sampleAttr()))
	f.Add(EncodePage([]Extent{{Off: 1, Len: 2}}))
	f.Add(EncodeEntry(Entry{ID: Root, Type: TypeDir}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if a, err := DecodeAttr(b); err == nil {
			if got, err := DecodeAttr(EncodeAttr(a)); err != nil || !reflect.DeepEqual(got, a) {
				t.Fatalf("re-encoding %+v gives %+v, %v", a, got, err)
			}
		}
		DecodeEntry(b)
		if ext, err := DecodePage(b); err == nil {
			if got, err := DecodePage(EncodePage(ext)); err != nil || !reflect.DeepEqual(got, ext) {
				t.Fatalf("re-encoding page %+v gives %+v, %v", ext, got, err)
			}
		}
	})
}
