package inode

import (
	"context"
	"errors"
	"fmt"
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

// maxRetries bounds how often an operation that lost a race for a record
// reads it again and retries.
const maxRetries = 8

// Setattr changes an inode's attributes, retrying when another change to
// the inode lands between its read and its write, and returns the result.
// A new size cuts inline bytes and extents past it; growing leaves a hole
// of zeros.
func (f *FS) Setattr(ctx context.Context, id ID, sa SetAttr) (Attr, error) {
	for range maxRetries {
		a, h, err := f.GetAttr(ctx, id)
		if err != nil {
			return Attr{}, err
		}
		now := f.clock().UnixNano()
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
				return Attr{}, fmt.Errorf("truncate %s: %w", id, syscall.EISDIR)
			}
			resize(&a, *sa.Size)
			a.Mtime = now
		}
		if sa.Atime != nil {
			a.Atime = *sa.Atime
		}
		if sa.Mtime != nil {
			a.Mtime = *sa.Mtime
		}
		a.Ctime = now
		_, err = f.log.Do(ctx, txlog.Request{Partition: PartitionName(id.Part), Level: f.levels.Write, Kind: txlog.KindWrite,
			Write: []txlog.Change{{Name: InodeRecord(id.Num), Value: EncodeAttr(a), IfMatch: &h}}})
		if errors.Is(err, txlog.ErrConflict) {
			continue
		}
		if err != nil {
			return Attr{}, errno(err)
		}
		return a, nil
	}
	return Attr{}, fmt.Errorf("setattr %s: changed %d times meanwhile: %w", id, maxRetries, syscall.EAGAIN)
}

// resize sets a file's size, cutting inline bytes and extents past it.
func resize(a *Attr, size uint64) {
	if uint64(len(a.Inline)) > size {
		a.Inline = a.Inline[:size]
	}
	var kept []Extent
	for _, e := range a.Extents {
		if e.Off >= size {
			continue
		}
		e.Len = min(e.Len, size-e.Off)
		kept = append(kept, e)
	}
	a.Extents = kept
	a.Size = size
}

// Rename moves the entry name of directory dir to newName in the same
// directory, replacing what newName named as POSIX says: a file by a file,
// an empty directory by a directory. All of it is one transaction of the
// directory's partition (after, for a replaced directory, its tombstone),
// so no crash leaves both names or neither. Across directories it is EXDEV
// for now; mv then copies.
func (f *FS) Rename(ctx context.Context, dir ID, name string, newDir ID, newName string) error {
	if dir != newDir {
		return fmt.Errorf("rename across directories: %w", syscall.EXDEV)
	}
	if err := checkName(newName); err != nil {
		return err
	}
	part, err := f.children(ctx, dir)
	if err != nil {
		return err
	}
	src, sh, err := f.entry(ctx, part, name)
	if err != nil {
		return err
	}
	if name == newName {
		return nil
	}
	var zero txlog.Hash
	changes := []txlog.Change{
		{Name: EntryRecord(name), Delete: true, IfMatch: &sh},
		{Name: EntryRecord(newName), Value: EncodeEntry(src)},
	}
	dst, dh, err := f.entry(ctx, part, newName)
	switch {
	case errors.Is(err, syscall.ENOENT):
		changes[1].IfMatch = &zero
	case err != nil:
		return err
	case dst.ID == src.ID:
		return nil // two links to one inode: POSIX leaves both
	default:
		changes[1].IfMatch = &dh
		if dst.ID.Part != part {
			return fmt.Errorf("rename onto %q: its inode lives in another partition: %w", newName, syscall.EXDEV)
		}
		gone, err := f.replaced(ctx, src, dst, newName)
		if err != nil {
			return err
		}
		changes = append(changes, gone)
	}
	_, err = f.log.Do(ctx, txlog.Request{Partition: PartitionName(part), Level: f.levels.Write, Kind: txlog.KindWrite, Write: changes})
	if errors.Is(err, txlog.ErrConflict) {
		return fmt.Errorf("rename %q: changed meanwhile: %w", name, syscall.EAGAIN)
	}
	return errno(err)
}

// replaced checks that src may replace dst and returns the change to dst's
// inode: one link fewer, or gone.
func (f *FS) replaced(ctx context.Context, src, dst Entry, dstName string) (txlog.Change, error) {
	switch {
	case src.Type == TypeDir && dst.Type != TypeDir:
		return txlog.Change{}, fmt.Errorf("rename onto %q: %w", dstName, syscall.ENOTDIR)
	case src.Type != TypeDir && dst.Type == TypeDir:
		return txlog.Change{}, fmt.Errorf("rename onto %q: %w", dstName, syscall.EISDIR)
	}
	a, h, err := f.GetAttr(ctx, dst.ID)
	if err != nil {
		return txlog.Change{}, err
	}
	if dst.Type == TypeDir {
		// Mark the replaced directory dead while it is empty, as rmdir does.
		_, err := f.log.Do(ctx, txlog.Request{Partition: PartitionName(a.Children), Level: f.levels.Write, Kind: txlog.KindWrite, IfEmpty: entryPrefix,
			Write: []txlog.Change{{Name: deadRecord, Value: []byte{1}}}})
		if errors.Is(err, txlog.ErrConflict) {
			return txlog.Change{}, fmt.Errorf("rename onto %q: %w", dstName, syscall.ENOTEMPTY)
		}
		if err != nil {
			return txlog.Change{}, errno(err)
		}
	}
	c := txlog.Change{Name: InodeRecord(dst.ID.Num), IfMatch: &h, Delete: a.Nlink <= 1 || dst.Type == TypeDir}
	if !c.Delete {
		a.Nlink--
		a.Ctime = f.clock().UnixNano()
		c.Value = EncodeAttr(a)
	}
	return c, nil
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
	for range maxRetries {
		a, h, err := f.GetAttr(ctx, id)
		if err != nil {
			return err
		}
		if a.Xattrs == nil {
			a.Xattrs = map[string][]byte{}
		}
		if err := fn(a.Xattrs); err != nil {
			return err
		}
		a.Ctime = f.clock().UnixNano()
		_, err = f.log.Do(ctx, txlog.Request{Partition: PartitionName(id.Part), Level: f.levels.Write, Kind: txlog.KindWrite,
			Write: []txlog.Change{{Name: InodeRecord(id.Num), Value: EncodeAttr(a), IfMatch: &h}}})
		if errors.Is(err, txlog.ErrConflict) {
			continue
		}
		return errno(err)
	}
	return fmt.Errorf("xattr of %s: changed %d times meanwhile: %w", id, maxRetries, syscall.EAGAIN)
}
