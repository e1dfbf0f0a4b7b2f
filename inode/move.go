package inode

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/txlog"
)

// A rename across directories changes two partitions, which no single
// transaction can. It runs in three steps:
//
//  1. In the source partition, the entry is rewritten with a Move mark
//     naming a fresh transaction id and the destination partition. The
//     entry still exists under its old name.
//  2. In the destination partition, one transaction writes the decision
//     record "r/<txid>" as committed (only if it does not exist yet), the
//     new entry, and the replaced inode's change. This is the rename's
//     single commit point.
//  3. The marked source entry is deleted, then the decision record.
//
// An exchange (RENAME_EXCHANGE) across directories runs the same steps:
// its mark also names the entry that replaces the source once the move
// commits (Move.Replace), the commit writes the source's entry in the
// destination's place, and step 3 writes the replacement instead of
// deleting. Each directory's times and subdirectory count change with
// the step that changes its entries: the commit for the destination,
// step 3 for the source.
//
// Whoever reads a marked entry looks up its decision: committed means the
// entry is gone, anything else that it is still there (checked by reading
// the entry again, unchanged, after the decision). Whoever changes a
// marked entry (or reads one marked long ago, whose renamer may have
// crashed) settles it first: it finishes a committed move, and aborts an
// undecided one by writing the decision record as aborted (only if it
// does not exist yet: the same record the renamer's commit needs), then
// restores the entry. An aborted decision is kept, so that a renamer
// that wakes up late cannot commit after all. So no crash and no race
// ever shows both names or neither.

// Decision record values.
const (
	moveCommitted byte = 1
	moveAborted   byte = 2
)

// staleMove is how long a move may stay undecided before a reader aborts
// it; renames finish in well under a second unless their client died.
const staleMove = time.Minute

// errRaced says that a record changed between a read and a conditional
// write; the operation reads again and retries.
var errRaced = errors.New("inode: raced with another change")

// moveRecord returns the name of a move's decision record.
func moveRecord(txid uint64) string { return fmt.Sprintf("r/%016x", txid) }

// liveEntry reads the entry name of partition part as users see it: an
// entry moved away by a committed rename is ENOENT, one whose move is not
// committed is there, unmarked. With settle (callers about to change the
// entry), and for moves left undecided past staleMove, it also brings the
// move to its end first. The hash is the entry record's as read.
func (f *FS) liveEntry(ctx context.Context, part uint64, name string, settle bool) (Entry, txlog.Hash, error) {
	return f.liveEntryAt(ctx, f.levels.Read, part, name, settle)
}

// liveEntryAt is liveEntry reading the entry at level lv.
func (f *FS) liveEntryAt(ctx context.Context, lv level.Level, part uint64, name string, settle bool) (Entry, txlog.Hash, error) {
	for range maxRetries {
		e, h, err := f.entryAt(ctx, lv, part, name)
		if err != nil || e.Move == nil {
			return e, h, err
		}
		m := *e.Move
		e.Move = nil
		settle := settle || time.Duration(f.clock().UnixNano()-m.Since) > staleMove
		d, err := f.decision(ctx, m)
		if err != nil {
			return Entry{}, txlog.Hash{}, err
		}
		switch {
		case d == moveCommitted && settle:
			if err := f.finishMove(ctx, part, name, e, h, m); err != nil {
				return Entry{}, txlog.Hash{}, err
			}
			if m.Replace != nil {
				continue // read what the exchange put there
			}
			return Entry{}, txlog.Hash{}, fmt.Errorf("%q: moved away: %w", name, syscall.ENOENT)
		case d == moveCommitted && m.Replace != nil:
			return *m.Replace, h, nil
		case d == moveCommitted:
			return Entry{}, txlog.Hash{}, fmt.Errorf("%q: moved away: %w", name, syscall.ENOENT)
		case !settle:
			// Not committed when the decision was read, unless the move
			// ended and its record went between the two reads: then the
			// entry is gone or changed now.
			if _, h2, err := f.entryAt(ctx, lv, part, name); err == nil && h2 == h {
				return e, h, nil
			}
		case d == 0:
			if err := f.abortMove(ctx, m); err != nil && !errors.Is(err, errRaced) {
				return Entry{}, txlog.Hash{}, err
			}
		default: // aborted, and settling: restore the entry
			if err := f.restore(ctx, part, name, e, h); err != nil {
				return Entry{}, txlog.Hash{}, err
			}
		}
	}
	return Entry{}, txlog.Hash{}, fmt.Errorf("%q: changed %d times meanwhile: %w", name, maxRetries, syscall.EAGAIN)
}

// decision reads a move's decision record at the write level: committed,
// aborted, or 0 for none yet.
func (f *FS) decision(ctx context.Context, m Move) (byte, error) {
	resp, err := f.log.Do(ctx, txlog.Request{Partition: PartitionName(m.Dest), Level: f.levels.Write, Kind: txlog.KindRead, Name: moveRecord(m.Txid)})
	if err != nil {
		return 0, errno(err)
	}
	if !resp.Record.Exists || len(resp.Record.Value) != 1 {
		return 0, nil
	}
	return resp.Record.Value[0], nil
}

// abortMove writes a move's decision as aborted unless one exists.
func (f *FS) abortMove(ctx context.Context, m Move) error {
	var zero txlog.Hash
	_, err := f.write(ctx, m.Dest, txlog.Change{Name: moveRecord(m.Txid), Value: []byte{moveAborted}, IfMatch: &zero})
	return err
}

// restore puts back the entry of an aborted move, unless it changed since
// it was read as h.
func (f *FS) restore(ctx context.Context, part uint64, name string, e Entry, h txlog.Hash) error {
	_, err := f.write(ctx, part, txlog.Change{Name: EntryRecord(name), Value: EncodeEntry(e), IfMatch: &h})
	if errors.Is(err, errRaced) {
		return nil
	}
	return err
}

// finishMove ends a committed move of the entry name of partition part
// (e, unmarked; read marked as h): it deletes the entry, or writes the
// one an exchange swaps in, with the directory's times and subdirectory
// count, unless the entry changed since (then someone else finished it);
// then it deletes the decision record.
func (f *FS) finishMove(ctx context.Context, part uint64, name string, e Entry, h txlog.Hash, m Move) error {
	c := txlog.Change{Name: EntryRecord(name), Delete: true, IfMatch: &h}
	var added Type
	moved := []ID{e.ID}
	if m.Replace != nil {
		c = txlog.Change{Name: EntryRecord(name), Value: EncodeEntry(*m.Replace), IfMatch: &h}
		added = m.Replace.Type
		moved = append(moved, m.Replace.ID)
	}
	for range maxRetries {
		now := f.clock().UnixNano()
		dc, err := f.dirChanges(ctx, part, subdirDelta(added, e.Type), now)
		if err != nil {
			return err
		}
		// The inodes whose names moved change with the move's last step:
		// in its transaction where they live in this partition, just
		// before it where they do not. So a name never moves without its
		// inode changing after the move began, which fsck's search for
		// inodes no name reaches relies on (see checkOrphans).
		for _, id := range moved {
			tc, err := f.touch(ctx, id, now)
			if err != nil {
				return err
			}
			if id.Part == part {
				dc = append(dc, tc)
			} else if _, err := f.write(ctx, id.Part, tc); err != nil && !errors.Is(err, errRaced) {
				return err
			}
		}
		_, err = f.write(ctx, part, append(dc, c)...)
		if err == nil {
			break
		}
		if !errors.Is(err, errRaced) {
			return err
		}
		// The entry changed (finished by someone else), or the count
		// did: go on only in the second case.
		if _, h2, err := f.entry(ctx, part, name); err != nil || h2 != h {
			break
		}
	}
	return f.dropDecision(ctx, m)
}

// touch returns the change that sets inode id's ctime to now, conditional
// on the inode as it is; an inode gone yields a check that it is still
// gone.
func (f *FS) touch(ctx context.Context, id ID, now int64) (txlog.Change, error) {
	a, ah, _, err := f.attrToChange(ctx, id)
	if errors.Is(err, syscall.ENOENT) {
		return txlog.Change{Name: InodeRecord(id.Num), Check: true, IfMatch: &txlog.Hash{}}, nil
	}
	if err != nil {
		return txlog.Change{}, err
	}
	a.Ctime = max(a.Ctime, now)
	return txlog.Change{Name: InodeRecord(id.Num), Value: EncodeAttr(a), IfMatch: &ah}, nil
}

// dropDecision deletes a committed move's decision record, once its
// source entry is gone.
func (f *FS) dropDecision(ctx context.Context, m Move) error {
	_, err := f.write(ctx, m.Dest, txlog.Change{Name: moveRecord(m.Txid), Delete: true})
	if errors.Is(err, txlog.ErrNotFound) {
		return nil // someone else did
	}
	return err
}

// move commits a rename of the entry name of partition part1 (src, read
// as sh) into partition part2, where dst holds the changes that create the
// new entry and replace what it names; with replace set (an exchange), the
// entry name becomes replace. errRaced means that a record changed
// meanwhile, and that nothing was moved.
func (f *FS) move(ctx context.Context, part1 uint64, name string, src Entry, sh txlog.Hash, part2 uint64, dst []txlog.Change, replace *Entry) error {
	m := Move{Txid: randomID(), Dest: part2, Since: f.clock().UnixNano(), Replace: replace}
	marked := src
	marked.Move = &m
	mh, err := f.write(ctx, part1, txlog.Change{Name: EntryRecord(name), Value: EncodeEntry(marked), IfMatch: &sh})
	if err != nil {
		return err
	}
	var zero txlog.Hash
	commit := append([]txlog.Change{
		{Name: moveRecord(m.Txid), Value: []byte{moveCommitted}, IfMatch: &zero},
		{Name: deadRecord, Check: true, IfMatch: &zero},
	}, dst...)
	if _, err := f.write(ctx, part2, commit...); err != nil {
		// The commit failed, or its outcome is unknown: decide it for good.
		if aerr := f.abortMove(ctx, m); aerr != nil && !errors.Is(aerr, errRaced) {
			return err // undecided still; the next to touch the entry decides
		}
		d, derr := f.decision(ctx, m)
		if derr != nil {
			return err
		}
		if d != moveCommitted {
			if rerr := f.restore(ctx, part1, name, src, mh); rerr != nil {
				return rerr
			}
			if errors.Is(err, errRaced) {
				if dead, derr := f.dead(ctx, part2); derr == nil && dead {
					return fmt.Errorf("rename into a removed directory: %w", syscall.ENOENT)
				}
			}
			return err
		}
	}
	return f.finishMove(ctx, part1, name, src, mh, m)
}

// dead reports whether partition part belongs to a removed directory.
func (f *FS) dead(ctx context.Context, part uint64) (bool, error) {
	resp, err := f.log.Do(ctx, txlog.Request{Partition: PartitionName(part), Level: f.levels.Write, Kind: txlog.KindRead, Name: deadRecord})
	if err != nil {
		return false, errno(err)
	}
	return resp.Record.Exists, nil
}

// write commits changes to partition part at the write level and returns
// the transaction's hash, which is every changed record's new hash. A
// failed condition is errRaced.
func (f *FS) write(ctx context.Context, part uint64, changes ...txlog.Change) (txlog.Hash, error) {
	resp, err := f.log.Do(ctx, txlog.Request{Partition: PartitionName(part), Level: f.levels.Write, Kind: txlog.KindWrite, Write: changes})
	f.known.wrote(part, changes, resp.Tx.Hash, err)
	if f.onChange != nil {
		for _, c := range changes {
			if num, ok := inodeNum(c.Name); ok && !c.Check {
				f.onChange(ID{Part: part, Num: num})
			}
		}
	}
	if errors.Is(err, txlog.ErrConflict) {
		return txlog.Hash{}, fmt.Errorf("%w: %v", errRaced, err)
	}
	if err != nil {
		return txlog.Hash{}, errno(err)
	}
	return resp.Tx.Hash, nil
}
