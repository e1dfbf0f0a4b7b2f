package inode

import (
	"errors"
	"syscall"
	"testing"

	"github.com/difuse/difuse/blockstore"
)

func TestSetattr(t *testing.T) {
	fs := newFS(t, 3)[0]
	ctx := ctxT(t)
	id, _, err := fs.Create(ctx, Root, "f", NewAttr{Type: TypeFile, Mode: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	mode, uid, mtime := uint32(0o100600), uint32(42), int64(123456789)
	a, err := fs.Setattr(ctx, id, SetAttr{Mode: &mode, UID: &uid, Mtime: &mtime})
	if err != nil || a.Mode != 0o600 || a.UID != 42 || a.Mtime != mtime {
		t.Fatalf("Setattr = %+v, %v", a, err)
	}
	if got, _, _ := fs.GetAttr(ctx, id); got.Mode != 0o600 || got.UID != 42 || got.Mtime != mtime || got.Ctime == 0 {
		t.Errorf("after Setattr: %+v", got)
	}
	// Truncation cuts extents and inline bytes past the new size.
	b := blockstore.Sum([]byte("x"))
	full := Attr{Size: 3 << 20, Inline: []byte("0123456789"), Extents: []Extent{{0, 1 << 20, b}, {1 << 20, 1 << 20, b}, {2 << 20, 1 << 20, b}}}
	resize(&full, 1<<20+5)
	if full.Size != 1<<20+5 || len(full.Extents) != 2 || full.Extents[1].Len != 5 || len(full.Inline) != 10 {
		t.Errorf("resize to 1 MiB + 5: %+v", full)
	}
	resize(&full, 4)
	if len(full.Extents) != 1 || full.Extents[0].Len != 4 || string(full.Inline) != "0123" {
		t.Errorf("resize to 4: %+v", full)
	}
	size := uint64(4096)
	if a, err := fs.Setattr(ctx, id, SetAttr{Size: &size}); err != nil || a.Size != 4096 {
		t.Errorf("grow to 4096: %+v, %v", a, err)
	}
	if _, err := fs.Setattr(ctx, Root, SetAttr{Size: &size}); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("truncate of a directory: %v", err)
	}
}

func TestRename(t *testing.T) {
	fss := newFS(t, 3)
	fs := fss[0]
	ctx := ctxT(t)
	mk := func(name string, typ Type) ID {
		id, _, err := fs.Create(ctx, Root, name, NewAttr{Type: typ, Mode: 0o755})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	a, b := mk("a", TypeFile), mk("b", TypeFile)
	if err := fss[1].Rename(ctx, Root, "a", Root, "a2", 0); err != nil {
		t.Fatal(err)
	}
	if e, err := fs.Lookup(ctx, Root, "a2"); err != nil || e.ID != a {
		t.Fatalf("after rename, a2 = %+v, %v", e, err)
	}
	if _, err := fs.Lookup(ctx, Root, "a"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("the old name survived: %v", err)
	}
	// Replacing a file drops its inode.
	if err := fs.Rename(ctx, Root, "a2", Root, "b", 0); err != nil {
		t.Fatal(err)
	}
	if e, _ := fs.Lookup(ctx, Root, "b"); e.ID != a {
		t.Errorf("b names %s, want %s", e.ID, a)
	}
	if _, _, err := fs.GetAttr(ctx, b); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("the replaced file's inode survived: %v", err)
	}
	d1, d2 := mk("d1", TypeDir), mk("d2", TypeDir)
	if err := fs.Rename(ctx, Root, "d1", Root, "b", 0); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("a directory onto a file: %v, want ENOTDIR", err)
	}
	if err := fs.Rename(ctx, Root, "b", Root, "d1", 0); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("a file onto a directory: %v, want EISDIR", err)
	}
	if _, _, err := fs.Create(ctx, d2, "x", NewAttr{Type: TypeFile}); err != nil {
		t.Fatal(err)
	}
	if err := fs.Rename(ctx, Root, "d1", Root, "d2", 0); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("onto a non-empty directory: %v, want ENOTEMPTY", err)
	}
	if err := fs.Unlink(ctx, d2, "x"); err != nil {
		t.Fatal(err)
	}
	if err := fs.Rename(ctx, Root, "d1", Root, "d2", 0); err != nil {
		t.Fatalf("onto an empty directory: %v", err)
	}
	if e, _ := fs.Lookup(ctx, Root, "d2"); e.ID != d1 {
		t.Errorf("d2 names %s, want %s", e.ID, d1)
	}
	list, err := fs.Readdir(ctx, Root)
	if err != nil || len(list) != 2 || list[0].Name != "b" || list[1].Name != "d2" {
		t.Errorf("root after the renames: %+v, %v", list, err)
	}
}

func TestXattrs(t *testing.T) {
	fs := newFS(t, 3)[0]
	ctx := ctxT(t)
	id, _, err := fs.Create(ctx, Root, "f", NewAttr{Type: TypeFile, Mode: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.SetXattr(ctx, id, "user.a", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	if err := fs.SetXattr(ctx, id, "user.a", []byte("2"), XattrCreate); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("create of an existing xattr: %v", err)
	}
	if err := fs.SetXattr(ctx, id, "user.b", []byte("2"), XattrReplace); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("replace of a missing xattr: %v", err)
	}
	if err := fs.SetXattr(ctx, id, "system.posix_acl_access", []byte{2, 0, 0, 0}, 0); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("an ACL: %v, want EOPNOTSUPP", err)
	}
	if err := fs.SetXattr(ctx, id, "user.big", make([]byte, maxXattrValue+1), 0); !errors.Is(err, syscall.E2BIG) {
		t.Errorf("an oversized xattr: %v", err)
	}
	if a, _, _ := fs.GetAttr(ctx, id); string(a.Xattrs["user.a"]) != "1" || len(a.Xattrs) != 1 {
		t.Errorf("xattrs = %v", a.Xattrs)
	}
	if err := fs.RemoveXattr(ctx, id, "user.a"); err != nil {
		t.Fatal(err)
	}
	if err := fs.RemoveXattr(ctx, id, "user.a"); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("remove of a missing xattr: %v", err)
	}
}
