package inode

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/difuse/difuse/txlog"
)

// SetAttr names the attributes Setattr changes; nil fields stay.
type SetAttr struct {
	Mode         *uint32
	UID, GID     *uint32
	Size         *uint64
	Atime, Mtime *int64
}

// apply makes the changes of sa to a at time now. A new size cuts inline
// bytes and extents past it; growing leaves a hole of zeros.
func (sa SetAttr) apply(a *Attr, now int64) error {
	if sa.Mode != nil {
		a.Mode = *sa.Mode & 0o7777
	}
	if sa.UID != nil {
		a.UID = *sa.UID
	}
	if sa.GID != nil {
		a.GID = *sa.GID
	}
	if sa.Size != nil {
		if a.Type != TypeFile {
			return fmt.Errorf("truncate: %w", syscall.EISDIR)
		}
		resize(a, *sa.Size)
		a.Mtime = now
	}
	if sa.Atime != nil {
		a.Atime = *sa.Atime
	}
	if sa.Mtime != nil {
		a.Mtime = *sa.Mtime
	}
	a.Ctime = now
	return nil
}

// merge returns sa with the changes of later over it.
func (sa SetAttr) merge(later SetAttr) SetAttr {
	for _, f := range []struct{ to, from **uint32 }{{&sa.Mode, &later.Mode}, {&sa.UID, &later.UID}, {&sa.GID, &later.GID}} {
		if *f.from != nil {
			*f.to = *f.from
		}
	}
	if later.Size != nil {
		sa.Size = later.Size
	}
	if later.Atime != nil {
		sa.Atime = later.Atime
	}
	if later.Mtime != nil {
		sa.Mtime = later.Mtime
	}
	return sa
}

// maxRetries bounds how often an operation that lost a race for a record
// reads it again and retries.
const maxRetries = 8

// Setattr changes an inode's attributes, retrying when another change to
// the inode lands between its read and its write, and returns the result.
// A new size cuts inline bytes and extents past it; growing leaves a hole
// of zeros.
func (f *FS) Setattr(ctx context.Context, id ID, sa SetAttr) (Attr, error) {
	var garbage []string
	a, err := f.updateFile(ctx, id, "setattr", func(a *Attr) ([]txlog.Change, error) {
		var changes []txlog.Change
		if sa.Size != nil && a.Paged() && a.Type == TypeFile {
			var err error
			if changes, garbage, err = f.truncatePages(ctx, id, a, *sa.Size); err != nil {
				return nil, err
			}
		}
		return changes, sa.apply(a, f.clock().UnixNano())
	})
	if err == nil {
		f.deleteGarbage(ctx, id.Part, garbage)
	}
	if err != nil || a.Type != TypeDir {
		return a, err
	}
	if sa.Mtime != nil {
		// A directory's times are kept beside its entries (Stat).
		if _, err := f.write(ctx, a.Children, txlog.Change{Name: TimesRecord, Value: encodeDirTimes(*sa.Mtime, a.Ctime)}); err != nil {
			return Attr{}, err
		}
	}
	return f.Stat(ctx, id)
}

// maxPageDeletes bounds the page records one transaction deletes beside
// its other changes; a change that drops more (a large file truncated or
// removed) deletes the rest after it, in transactions of their own. Until
// then they are garbage: records no inode names, which nothing reads.
const maxPageDeletes = 512

// truncatePages cuts the pages of paged file id (attributes a) at size:
// extents past it go, one across it is shortened, and pages left empty
// are dropped from a. It returns the changes that go with a's write and
// the page records to delete after it.
func (f *FS) truncatePages(ctx context.Context, id ID, a *Attr, size uint64) ([]txlog.Change, []string, error) {
	if size >= a.Size {
		return nil, nil, nil
	}
	last := size >> a.PageShift // the page size falls in; those after it go
	touched := map[uint64][]Extent{}
	var dropped []string
	for _, p := range a.Pages {
		switch {
		case p.Index > last:
			dropped = append(dropped, PageRecord(id.Num, p.Index, p.Ver))
		case p.Index+1 >= last:
			// The page size falls in, or the one before, whose last
			// extent may reach into it.
			ext, err := f.page(ctx, id, p)
			if err != nil {
				return nil, nil, err
			}
			cut := cutExtents(ext, size)
			if len(cut) != len(ext) || len(cut) > 0 && cut[len(cut)-1] != ext[len(cut)-1] {
				touched[p.Index] = cut
			}
		}
	}
	kept := a.Pages[:0:0]
	for _, p := range a.Pages {
		if p.Index <= last {
			kept = append(kept, p)
		}
	}
	a.Pages = kept
	changes := pageChanges(id.Num, a, touched)
	n := min(len(dropped), maxPageDeletes)
	for _, name := range dropped[:n] {
		changes = append(changes, txlog.Change{Name: name, Delete: true})
	}
	return changes, dropped[n:], nil
}

// cutExtents returns sorted extents cut at size: those past it dropped,
// one across it shortened.
func cutExtents(ext []Extent, size uint64) []Extent {
	var out []Extent
	for _, e := range ext {
		if e.Off >= size {
			break
		}
		e.Len = min(e.Len, size-e.Off)
		out = append(out, e)
	}
	return out
}

// deleteGarbage deletes records no inode names any more, in transactions
// of their own. It is best effort: what it leaves is garbage that nothing
// reads and fsck finds.
func (f *FS) deleteGarbage(ctx context.Context, part uint64, names []string) {
	for len(names) > 0 {
		n := min(len(names), txlog.MaxChanges)
		changes := make([]txlog.Change, n)
		for i, name := range names[:n] {
			changes[i] = txlog.Change{Name: name, Delete: true}
		}
		if _, err := f.write(ctx, part, changes...); err != nil {
			return
		}
		names = names[n:]
	}
}

// updateInode reads inode id, changes it with fn and writes it back under
// the condition that nothing changed it meanwhile, reading and retrying if
// something did; what names the operation in errors. It returns the inode
// as written.
func (f *FS) updateInode(ctx context.Context, id ID, what string, fn func(*Attr) error) (Attr, error) {
	return f.updateFile(ctx, id, what, func(a *Attr) ([]txlog.Change, error) { return nil, fn(a) })
}

// updateFile is updateInode for a change that writes more records of the
// inode's partition with it (a paged file's pages): fn returns those
// changes, which commit in the inode's transaction.
func (f *FS) updateFile(ctx context.Context, id ID, what string, fn func(*Attr) ([]txlog.Change, error)) (Attr, error) {
	var out Attr
	err := retry(what+" "+id.String(), func() error {
		a, h, seen, err := f.attrToChange(ctx, id)
		if err != nil {
			return err
		}
		more, err := fn(&a)
		if err != nil {
			if ctx.Err() == nil && (seen || errors.Is(err, errStalePage)) {
				// Perhaps only because it is stale: read it.
				f.known.forget(id.Part, InodeRecord(id.Num))
				return errRaced
			}
			return fmt.Errorf("%s %s: %w", what, id, err)
		}
		changes := append(more, txlog.Change{Name: InodeRecord(id.Num), Value: EncodeAttr(a), IfMatch: &h})
		if _, err := f.write(ctx, id.Part, changes...); err != nil {
			return err
		}
		progressed(ctx)
		out = a
		return nil
	})
	return out, err
}

// attrToChange returns inode id as this FS last saw it (seen), for a
// change conditional on its hash, else as read now.
func (f *FS) attrToChange(ctx context.Context, id ID) (Attr, txlog.Hash, bool, error) {
	if a, h, ok := knownRecord(f, id.Part, InodeRecord(id.Num), DecodeAttr); ok {
		return a, h, true, nil
	}
	a, h, err := f.GetAttr(ctx, id)
	return a, h, false, err
}

// resize sets a file's size, cutting inline bytes and extents past it (a
// paged file's pages are truncatePages').
func resize(a *Attr, size uint64) {
	if uint64(len(a.Inline)) > size {
		a.Inline = a.Inline[:size]
	}
	a.Extents = cutExtents(a.Extents, size)
	a.Size = size
}

// Xattr limits, as Linux has them.
const (
	maxXattrName  = 255
	maxXattrValue = 64 << 10
)

// Xattr flags of SetXattr (XATTR_CREATE and XATTR_REPLACE).
const (
	XattrCreate  = 1
	XattrReplace = 2
)

// SetXattr sets an extended attribute; with XattrCreate it must not exist
// (EEXIST), with XattrReplace it must (ENODATA).
func (f *FS) SetXattr(ctx context.Context, id ID, name string, value []byte, flags uint32) error {
	if name == "" || len(name) > maxXattrName {
		return fmt.Errorf("xattr name of %d bytes: %w", len(name), syscall.ERANGE)
	}
	if len(value) > maxXattrValue {
		return fmt.Errorf("xattr value of %d bytes: %w", len(value), syscall.E2BIG)
	}
	if strings.HasPrefix(name, "system.posix_acl_") {
		// POSIX ACLs are not kept: refusing them makes tools such as
		// cp -a set the mode with chmod instead, which is kept.
		return fmt.Errorf("xattr %q: ACLs are not supported: %w", name, syscall.EOPNOTSUPP)
	}
	return f.changeXattrs(ctx, id, func(x map[string][]byte) error {
		_, ok := x[name]
		switch {
		case flags&XattrCreate != 0 && ok:
			return fmt.Errorf("xattr %q: %w", name, syscall.EEXIST)
		case flags&XattrReplace != 0 && !ok:
			return fmt.Errorf("xattr %q: %w", name, syscall.ENODATA)
		}
		x[name] = value
		return nil
	})
}

// RemoveXattr removes an extended attribute (ENODATA if absent).
func (f *FS) RemoveXattr(ctx context.Context, id ID, name string) error {
	return f.changeXattrs(ctx, id, func(x map[string][]byte) error {
		if _, ok := x[name]; !ok {
			return fmt.Errorf("xattr %q: %w", name, syscall.ENODATA)
		}
		delete(x, name)
		return nil
	})
}

// changeXattrs applies fn to an inode's xattrs and writes them back under
// the condition that the inode did not change meanwhile, retrying if it did.
func (f *FS) changeXattrs(ctx context.Context, id ID, fn func(map[string][]byte) error) error {
	_, err := f.updateInode(ctx, id, "xattr of", func(a *Attr) error {
		if a.Xattrs == nil {
			a.Xattrs = map[string][]byte{}
		}
		if err := fn(a.Xattrs); err != nil {
			return err
		}
		a.Ctime = f.clock().UnixNano()
		return nil
	})
	return err
}
