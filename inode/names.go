package inode

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"syscall"

	"github.com/difuse/difuse/txlog"
)

// An inode's record stays in the partition it was created in, while its
// names may be in other directories' (after a rename across directories,
// or a hard link). A change that touches both an entry and such a remote
// inode commits the entry first and the inode after: a crash in between
// leaves a link count too high, so space is kept too long, but never a
// name without its inode.

// retry runs op until it does not lose a race, at most maxRetries times.
func retry(what string, op func() error) error {
	for range maxRetries {
		if err := op(); !errors.Is(err, errRaced) {
			return err
		}
	}
	return fmt.Errorf("%s: changed %d times meanwhile: %w", what, maxRetries, syscall.EAGAIN)
}

// Unlink removes the entry name, not a directory, from directory dir, and
// drops a link of its inode: the inode goes with its last link.
func (f *FS) Unlink(ctx context.Context, dir ID, name string) error {
	part, err := f.children(ctx, dir)
	if err != nil {
		return err
	}
	return retry("unlink "+strconv.Quote(name), func() error {
		// An entry as this FS last saw it is tried first when it names a
		// file and no rename marks it: the change is conditional on it.
		e, eh, seen := knownRecord(f, part, EntryRecord(name), DecodeEntry)
		if !seen || e.Move != nil || e.Type == TypeDir {
			var err error
			if e, eh, err = f.liveEntry(ctx, part, name, true); err != nil {
				return err
			}
		}
		if e.Type == TypeDir {
			return fmt.Errorf("unlink %q: %w", name, syscall.EISDIR)
		}
		return f.removeEntry(ctx, part, name, e, eh)
	})
}

// removeEntry deletes the entry name of partition part (e, read as eh)
// and drops a link of its inode.
func (f *FS) removeEntry(ctx context.Context, part uint64, name string, e Entry, eh txlog.Hash) error {
	dc, err := f.dirChanges(ctx, part, subdirDelta(0, e.Type), f.clock().UnixNano())
	if err != nil {
		return err
	}
	del := append(dc, txlog.Change{Name: EntryRecord(name), Delete: true, IfMatch: &eh})
	if e.ID.Part != part {
		if _, err := f.write(ctx, part, del...); err != nil {
			return err
		}
		return f.dropLink(ctx, e.ID)
	}
	u, err := f.unlinkChange(ctx, e.ID)
	if err != nil {
		return err
	}
	if _, err = f.write(ctx, part, append(u.changes, del...)...); err == nil {
		f.deleteGarbage(ctx, e.ID.Part, u.garbage)
	}
	return err
}

// unlink is what drops a link of an inode: the changes of its
// transaction, and the page records to delete once it commits.
type unlink struct {
	changes []txlog.Change
	garbage []string
}

// unlinkChange returns what drops a link of inode id: one link fewer, or
// the inode gone with its last one (a directory has one), its pages with
// it. A file that loses its last link while the kernel has it open here
// (see KeepOpen) is kept, with no links, until Reclaim.
func (f *FS) unlinkChange(ctx context.Context, id ID) (unlink, error) {
	a, h, _, err := f.attrToChange(ctx, id)
	if err != nil {
		return unlink{}, err
	}
	c := txlog.Change{Name: InodeRecord(id.Num), IfMatch: &h}
	last := a.Nlink <= 1 || a.Type == TypeDir
	if !last || a.Type != TypeDir && f.isOpen != nil && f.isOpen(id) {
		a.Nlink = max(a.Nlink, 1) - 1
		a.Ctime = f.clock().UnixNano()
		c.Value = EncodeAttr(a)
		return unlink{changes: []txlog.Change{c}}, nil
	}
	c.Delete = true
	return deleteInode(id, a, c), nil
}

// deleteInode returns what deletes inode id (attributes a, deleted by c)
// and its pages.
func deleteInode(id ID, a Attr, c txlog.Change) unlink {
	u := unlink{changes: []txlog.Change{c}}
	for i, p := range a.Pages {
		name := PageRecord(id.Num, p.Index, p.Ver)
		if i < maxPageDeletes {
			u.changes = append(u.changes, txlog.Change{Name: name, Delete: true})
		} else {
			u.garbage = append(u.garbage, name)
		}
	}
	return u
}

// KeepOpen has the FS ask fn, before it deletes a file that loses its last
// link, whether the kernel has it open here; if so the file is kept with
// no links, its content readable and writable, until Reclaim. Call it
// before the FS is used.
func (f *FS) KeepOpen(fn func(ID) bool) { f.isOpen = fn }

// Reclaim deletes file id, and its pages, if it has no links left: the
// last handle of a file unlinked while open was closed.
func (f *FS) Reclaim(ctx context.Context, id ID) error {
	err := retry("reclaim inode "+id.String(), func() error {
		a, h, _, err := f.attrToChange(ctx, id)
		if err != nil || a.Nlink > 0 {
			return err
		}
		u := deleteInode(id, a, txlog.Change{Name: InodeRecord(id.Num), Delete: true, IfMatch: &h})
		if _, err := f.write(ctx, id.Part, u.changes...); err != nil {
			return err
		}
		f.deleteGarbage(ctx, id.Part, u.garbage)
		return nil
	})
	if errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return err
}

// dropLink drops a link of inode id in its own transaction; an inode
// already gone is no error.
func (f *FS) dropLink(ctx context.Context, id ID) error {
	err := retry("unlink inode "+id.String(), func() error {
		u, err := f.unlinkChange(ctx, id)
		if err != nil {
			return err
		}
		if _, err = f.write(ctx, id.Part, u.changes...); err == nil {
			f.deleteGarbage(ctx, id.Part, u.garbage)
		}
		return err
	})
	if errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return err
}

// Rmdir removes the empty directory name from directory dir: it first
// marks the directory's own partition dead, which succeeds only while no
// entry is left there (ENOTEMPTY otherwise) and makes later creates in it
// fail, then removes its entry and inode. A crash between the two leaves a
// dead directory that a repeated rmdir removes.
func (f *FS) Rmdir(ctx context.Context, dir ID, name string) error {
	part, err := f.children(ctx, dir)
	if err != nil {
		return err
	}
	return retry("rmdir "+strconv.Quote(name), func() error {
		e, eh, err := f.liveEntry(ctx, part, name, true)
		if err != nil {
			return err
		}
		if e.Type != TypeDir {
			return fmt.Errorf("rmdir %q: %w", name, syscall.ENOTDIR)
		}
		unbury, err := f.bury(ctx, e.ID, name)
		if err != nil {
			return err
		}
		err = f.removeEntry(ctx, part, name, e, eh)
		if undone(err) {
			unbury()
		}
		return err
	})
}

// bury marks the partition of directory id's entries dead if it has none
// (ENOTEMPTY otherwise). Entries that renames have moved away, but not
// yet cleaned up, are settled first. It returns what undoes the mark, for
// a caller whose change then definitely did not happen (a rename onto the
// directory that lost a race): a directory left marked would be listed
// but take no entry.
func (f *FS) bury(ctx context.Context, id ID, name string) (unbury func(), err error) {
	a, _, err := f.GetAttr(ctx, id)
	if err != nil {
		return nil, err
	}
	for try := 0; ; try++ {
		resp, err := f.log.Do(ctx, txlog.Request{Partition: PartitionName(a.Children), Level: f.levels.Write, Kind: txlog.KindWrite, IfEmpty: entryPrefix,
			Write: []txlog.Change{{Name: deadRecord, Value: []byte{1}}}})
		if err == nil {
			h := resp.Tx.Hash
			return func() {
				// Only the mark written here, and best effort: one left
				// behind is what a crash would leave, which rmdir removes.
				f.write(ctx, a.Children, txlog.Change{Name: deadRecord, Delete: true, IfMatch: &h})
			}, nil
		}
		if !errors.Is(err, txlog.ErrConflict) {
			return nil, errno(err)
		}
		if try > 0 {
			return nil, fmt.Errorf("directory %q: %w", name, syscall.ENOTEMPTY)
		}
		if err := f.settleAll(ctx, a.Children); err != nil {
			return nil, err
		}
	}
}

// undone reports whether a change that failed with err definitely did not
// happen (a condition failed), as opposed to one whose outcome is unknown
// (it may yet commit).
func undone(err error) bool { return errors.Is(err, errRaced) }

// settleAll settles every entry of partition part that a rename marked.
func (f *FS) settleAll(ctx context.Context, part uint64) error {
	return f.list(ctx, part, true, func(string, Entry, txlog.Hash) {}, nil)
}

// Flags of Rename, as renameat2 has them.
const (
	// RenameNoReplace fails with EEXIST when newName exists.
	RenameNoReplace = 1
	// RenameExchange swaps the two names, which must both exist.
	RenameExchange = 2
)

// Rename moves the entry name of directory dir to newName in directory
// newDir, replacing what newName named as POSIX says: a file by a file, an
// empty directory by a directory; flags (RenameNoReplace, RenameExchange)
// change that as renameat2's do. Within one directory it is one
// transaction; across directories it commits in one transaction of the
// destination's partition (see move). Either way no crash and no reader
// sees both names or neither. That a directory is not moved into itself
// is the kernel's check, made on the paths it resolved.
func (f *FS) Rename(ctx context.Context, dir ID, name string, newDir ID, newName string, flags uint32) error {
	if err := checkName(newName); err != nil {
		return err
	}
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return fmt.Errorf("rename flags %#x: %w", flags, syscall.EINVAL)
	}
	part1, err := f.children(ctx, dir)
	if err != nil {
		return err
	}
	part2 := part1
	if newDir != dir {
		if part2, err = f.children(ctx, newDir); err != nil {
			return err
		}
	}
	strict := false // read at the write level
	return retry("rename "+strconv.Quote(name), func() error {
		lv := f.levels.Read
		if strict {
			lv = f.levels.Write
		}
		src, sh, err := f.liveEntryAt(ctx, lv, part1, name, true)
		if err != nil || (part1 == part2 && name == newName) {
			return err
		}
		dst, dh, derr := f.liveEntryAt(ctx, lv, part2, newName, true)
		exists := derr == nil
		switch {
		case derr != nil && !errors.Is(derr, syscall.ENOENT):
			return derr
		case exists && flags&RenameNoReplace != 0:
			return fmt.Errorf("rename onto %q: %w", newName, syscall.EEXIST)
		case flags&RenameExchange != 0 && !exists:
			return fmt.Errorf("exchange with %q: %w", newName, derr)
		case exists && dst.ID == src.ID && !strict:
			// Two links to one inode, which POSIX leaves both. Nothing
			// would be written, so no condition would catch a stale
			// read (a deposed leader answers reads at the leader level
			// from entries it never committed): read both again at the
			// write level.
			strict = true
			return errRaced
		case exists && dst.ID == src.ID:
			return nil
		case flags&RenameExchange != 0:
			return f.exchange(ctx, part1, name, src, sh, part2, newName, dst, dh)
		}
		var zero txlog.Hash
		create := txlog.Change{Name: EntryRecord(newName), Value: EncodeEntry(src), IfMatch: &zero}
		changes := []txlog.Change{create}
		var garbage []string // page records of a replaced file, to delete after
		var remote *ID       // a replaced inode of another partition
		var replaced Type
		unbury := func() {} // undoes the mark of a directory replaced
		if exists {
			changes[0].IfMatch = &dh
			replaced = dst.Type
			if unbury, err = f.replaceable(ctx, src, dst, newName); err != nil {
				return err
			}
			if dst.ID.Part == part2 {
				u, err := f.unlinkChange(ctx, dst.ID)
				if err != nil {
					unbury()
					return err
				}
				changes = append(changes, u.changes...)
				garbage = u.garbage
			} else {
				remote = &dst.ID
			}
		}
		now := f.clock().UnixNano()
		written := false // once written, a failure may be an unknown outcome
		if part1 == part2 {
			var dc []txlog.Change
			if dc, err = f.dirChanges(ctx, part1, subdirDelta(0, replaced), now); err == nil {
				written = true
				_, err = f.write(ctx, part1, append(append(changes, dc...), txlog.Change{Name: EntryRecord(name), Delete: true, IfMatch: &sh})...)
			}
		} else {
			var dc []txlog.Change
			if dc, err = f.dirChanges(ctx, part2, subdirDelta(src.Type, replaced), now); err == nil {
				written = true
				err = f.move(ctx, part1, name, src, sh, part2, append(changes, dc...), nil)
			}
		}
		if err != nil {
			if !written || undone(err) {
				unbury()
			}
			return err
		}
		f.deleteGarbage(ctx, part2, garbage)
		if remote == nil {
			return nil
		}
		return f.dropLink(ctx, *remote)
	})
}

// exchange swaps the entries name of partition part1 (src, read as sh)
// and newName of part2 (dst, read as dh): in one transaction within a
// directory, by a move whose mark carries dst across two.
func (f *FS) exchange(ctx context.Context, part1 uint64, name string, src Entry, sh txlog.Hash, part2 uint64, newName string, dst Entry, dh txlog.Hash) error {
	now := f.clock().UnixNano()
	if part1 == part2 {
		_, err := f.write(ctx, part1,
			txlog.Change{Name: EntryRecord(name), Value: EncodeEntry(dst), IfMatch: &sh},
			txlog.Change{Name: EntryRecord(newName), Value: EncodeEntry(src), IfMatch: &dh},
			touched(now))
		return err
	}
	dc, err := f.dirChanges(ctx, part2, subdirDelta(src.Type, dst.Type), now)
	if err != nil {
		return err
	}
	in := txlog.Change{Name: EntryRecord(newName), Value: EncodeEntry(src), IfMatch: &dh}
	return f.move(ctx, part1, name, src, sh, part2, append(dc, in), &dst)
}

// replaceable checks that src may replace dst; a directory it replaces is
// first marked dead, which needs it empty, and the returned function
// undoes that.
func (f *FS) replaceable(ctx context.Context, src, dst Entry, dstName string) (unbury func(), err error) {
	switch {
	case src.Type == TypeDir && dst.Type != TypeDir:
		return nil, fmt.Errorf("rename onto %q: %w", dstName, syscall.ENOTDIR)
	case src.Type != TypeDir && dst.Type == TypeDir:
		return nil, fmt.Errorf("rename onto %q: %w", dstName, syscall.EISDIR)
	case dst.Type == TypeDir:
		return f.bury(ctx, dst.ID, dstName)
	}
	return func() {}, nil
}

// Link makes newName in directory newDir a new name of inode id, not a
// directory (EPERM), and returns its attributes after.
func (f *FS) Link(ctx context.Context, id ID, newDir ID, newName string) (Attr, error) {
	if err := checkName(newName); err != nil {
		return Attr{}, err
	}
	part, err := f.children(ctx, newDir)
	if err != nil {
		return Attr{}, err
	}
	var out Attr
	err = retry("link "+strconv.Quote(newName), func() error {
		a, ah, err := f.GetAttr(ctx, id)
		if err != nil {
			return err
		}
		if a.Type == TypeDir {
			return fmt.Errorf("link to directory %s: %w", id, syscall.EPERM)
		}
		a.Nlink++
		a.Ctime = f.clock().UnixNano()
		out = a
		var zero txlog.Hash
		entry := []txlog.Change{
			{Name: deadRecord, Check: true, IfMatch: &zero},
			{Name: EntryRecord(newName), Value: EncodeEntry(Entry{ID: id, Type: a.Type}), IfMatch: &zero},
			touched(a.Ctime),
		}
		inode := txlog.Change{Name: InodeRecord(id.Num), Value: EncodeAttr(a), IfMatch: &ah}
		if id.Part == part {
			_, err = f.write(ctx, part, append(entry, inode)...)
		} else if _, err = f.write(ctx, id.Part, inode); err == nil {
			// The link count first: a crash before the entry keeps it
			// one too high, never too low. So does an entry whose write
			// has an unknown outcome: it may yet commit, and a count
			// lowered under it would let the inode go with its other
			// name. Only an entry that definitely was not written gives
			// its link back.
			if _, err = f.write(ctx, part, entry...); undone(err) {
				if derr := f.dropLink(ctx, id); derr != nil {
					return derr
				}
			}
		}
		if errors.Is(err, errRaced) {
			return f.taken(ctx, part, newName)
		}
		return err
	})
	return out, err
}

// taken explains why creating the entry name in partition part lost a
// race: EEXIST if it exists, ENOENT if the directory was removed, else
// errRaced to retry (the inode changed, or a rename had moved the name
// away and is now settled).
func (f *FS) taken(ctx context.Context, part uint64, name string) error {
	_, _, err := f.liveEntry(ctx, part, name, true)
	switch {
	case err == nil:
		return fmt.Errorf("%q: %w", name, syscall.EEXIST)
	case !errors.Is(err, syscall.ENOENT):
		return err
	}
	dead, err := f.dead(ctx, part)
	switch {
	case err != nil:
		return err
	case dead:
		return fmt.Errorf("%q: the directory was removed: %w", name, syscall.ENOENT)
	}
	return errRaced
}
