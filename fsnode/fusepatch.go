//go:build difuse_fusepatch

package fsnode

import (
	"context"
	"syscall"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
)

// This file needs the project's patch of bazil.org/fuse
// (scripts/fusepatch.sh), which the build tag difuse_fusepatch stands for:
// renameat2's flags and SEEK_DATA/SEEK_HOLE.

var _ fs.HandleLseeker = (*Node)(nil)

// lseek's whence values the kernel passes on (it serves the others).
const (
	seekData = 3
	seekHole = 4
)

// renameFlags returns renameat2's flags of a rename.
func renameFlags(req *fuse.RenameRequest) uint32 { return req.Flags }

// Lseek finds the next data (SEEK_DATA) or hole (SEEK_HOLE) of the file at
// or after an offset, after committing its buffered writes; ENXIO past the
// end. The end of the file counts as a hole.
func (n *Node) Lseek(ctx context.Context, req *fuse.LseekRequest) (_ int64, err error) {
	defer n.s.observe("lseek", time.Now(), &err)
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	if err := n.flush(ctx); err != nil {
		return 0, n.s.errno("flush", err)
	}
	a, err := n.recentAttr(ctx)
	if err != nil {
		return 0, n.s.errno("lseek", err)
	}
	var off int64
	switch req.Whence {
	case seekData:
		off, err = n.s.fs.SeekData(ctx, n.id, a, req.Offset)
	case seekHole:
		off, err = n.s.fs.SeekHole(ctx, n.id, a, req.Offset)
	default:
		return 0, fuse.Errno(syscall.EINVAL)
	}
	if err != nil {
		return 0, n.s.errno("lseek", err)
	}
	return off, nil
}
