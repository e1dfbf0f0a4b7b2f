package inode

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"github.com/difuse/difuse/internal/codec"
	"github.com/difuse/difuse/txlog"
)

// A directory's inode lives in its parent's partition, its entries in a
// partition of its own. What changes with its entries is kept beside them,
// so that it changes in the very transaction that changes an entry: the
// record TimesRecord holds when the entries last changed (the directory's
// mtime and ctime), written by every create, unlink, rename and link in
// the directory without a condition (the last writer's time wins), and
// LinksRecord counts the entries that are directories (its link count is
// two more), changed under a condition by what adds or removes one.
// Stat merges them into the inode's attributes. A directory that has
// neither yet (one made before they were kept) shows its inode's times and
// two links.
const (
	TimesRecord = "dir/times"
	LinksRecord = "dir/links"
	dirPrefix   = "dir/"
)

// encodeDirTimes returns a TimesRecord value.
func encodeDirTimes(mtime, ctime int64) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(mtime))
	return binary.BigEndian.AppendUint64(b, uint64(ctime))
}

func decodeDirTimes(b []byte) (mtime, ctime int64, err error) {
	d := codec.NewDecoder(b, errDecode)
	mtime, ctime = int64(d.Uint64()), int64(d.Uint64())
	return mtime, ctime, d.Finish()
}

func decodeCount(b []byte) (uint64, error) {
	d := codec.NewDecoder(b, errDecode)
	n := d.Uvarint()
	return n, d.Finish()
}

// touched returns the change that records, in a directory's partition,
// that its entries changed at now.
func touched(now int64) txlog.Change {
	return txlog.Change{Name: TimesRecord, Value: encodeDirTimes(now, now)}
}

// relink returns the change that adds delta to the count of
// subdirectories of the directory whose entries are partition part,
// conditional on the count as it is now (as last seen, or read). A change
// made on a stale count fails its condition, and the retry reads it.
func (f *FS) relink(ctx context.Context, part uint64, delta int) (txlog.Change, error) {
	n, h, ok := knownRecord(f, part, LinksRecord, decodeCount)
	if !ok {
		var err error
		n, h, err = readRecord(ctx, f, part, LinksRecord, "link count", decodeCount)
		if errors.Is(err, syscall.ENOENT) {
			n, h, err = 0, txlog.Hash{}, nil
		}
		if err != nil {
			return txlog.Change{}, err
		}
	}
	switch {
	case delta < 0 && n < uint64(-delta):
		n = 0 // a count kept before every change kept it: do not wrap
	default:
		n = uint64(int64(n) + int64(delta))
	}
	return txlog.Change{Name: LinksRecord, Value: binary.AppendUvarint(nil, n), IfMatch: &h}, nil
}

// dirChanges returns the changes that go with a change to the entries of
// partition part at now: its times, and its subdirectory count if delta
// is not 0.
func (f *FS) dirChanges(ctx context.Context, part uint64, delta int, now int64) ([]txlog.Change, error) {
	out := []txlog.Change{touched(now)}
	if delta != 0 {
		c, err := f.relink(ctx, part, delta)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// subdirDelta is how the subdirectory count changes when an entry of type
// added replaces one of type removed (0 for none).
func subdirDelta(added, removed Type) int {
	d := 0
	if added == TypeDir {
		d++
	}
	if removed == TypeDir {
		d--
	}
	return d
}

// Stat returns inode id's attributes as users see them: for a directory,
// its times and link count come from its own partition (see TimesRecord).
func (f *FS) Stat(ctx context.Context, id ID) (Attr, error) {
	a, _, err := f.GetAttr(ctx, id)
	if err != nil || a.Type != TypeDir {
		return a, err
	}
	resp, err := f.log.Do(ctx, txlog.Request{Partition: PartitionName(a.Children), Level: f.levels.Read, Kind: txlog.KindList, Name: dirPrefix})
	if err != nil {
		return Attr{}, errno(err)
	}
	a.Nlink = 2
	for _, r := range resp.Records {
		f.known.note(a.Children, r.Name, r.Value, r.Hash)
		switch r.Name {
		case TimesRecord:
			mtime, ctime, err := decodeDirTimes(r.Value)
			if err != nil {
				return Attr{}, fmt.Errorf("directory %s: %w: %v", id, syscall.EIO, err)
			}
			a.Mtime, a.Ctime = mtime, max(a.Ctime, ctime)
		case LinksRecord:
			n, err := decodeCount(r.Value)
			if err != nil {
				return Attr{}, fmt.Errorf("directory %s: %w: %v", id, syscall.EIO, err)
			}
			a.Nlink = uint32(min(n+2, 1<<32-1))
		}
	}
	return a, nil
}
