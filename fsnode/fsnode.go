package fsnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"

	"github.com/difuse/difuse/inode"
)

// Options configure the FUSE layer.
type Options struct {
	// AttrValid and EntryValid are how long the kernel may cache
	// attributes and names. Default 1s each.
	AttrValid, EntryValid time.Duration
	// FlushBytes is how much an open file buffers before it commits in
	// the background while the next writes collect, so a file being
	// written holds up to twice this. Default 64 MiB.
	FlushBytes int
	// DirtyBytes bounds the writes all open files buffer together: past
	// it, a write commits its file's buffer and waits for that. Default
	// 128 MiB.
	DirtyBytes int64
	// OpTimeout bounds every operation but commits, so that nothing hangs
	// when the cluster does not answer. Default 30s.
	OpTimeout time.Duration
	// StallTimeout bounds a commit of buffered writes (close, fsync, a
	// full buffer) by its progress instead: it fails only after this long
	// without storing or reading a block or writing a record, however
	// long it takes in all. Default 2m.
	StallTimeout time.Duration
	// Logger receives the reasons behind EIO; nil discards them.
	Logger *slog.Logger
	// Capacity reports the bytes files take and have left, for statfs;
	// nil reports a large free space.
	Capacity func(context.Context) (used, free uint64, err error)
	// Observe, if set, is told of every operation the kernel asked for:
	// its name, how long it took and its error (for metrics).
	Observe func(op string, took time.Duration, err error)
}

// FS is the filesystem as the kernel sees it.
type FS struct {
	fs   *inode.FS
	opts Options
	log  *slog.Logger
	mu   sync.Mutex
	// nodes holds one Node per inode the kernel knows, so that every open
	// handle of a file shares its buffered writes.
	nodes map[inode.ID]*Node
}

// Every FUSE request the layer answers (Lseek: fusepatch.go); a method
// whose signature drifts from its interface's would go unused.
var (
	_ fs.FS                  = (*FS)(nil)
	_ fs.FSStatfser          = (*FS)(nil)
	_ fs.Node                = (*Node)(nil)
	_ fs.NodeRequestLookuper = (*Node)(nil)
	_ fs.HandleReadDirAller  = (*Node)(nil)
	_ fs.NodeMkdirer         = (*Node)(nil)
	_ fs.NodeCreater         = (*Node)(nil)
	_ fs.NodeSymlinker       = (*Node)(nil)
	_ fs.NodeMknoder         = (*Node)(nil)
	_ fs.NodeReadlinker      = (*Node)(nil)
	_ fs.NodeRemover         = (*Node)(nil)
	_ fs.NodeLinker          = (*Node)(nil)
	_ fs.NodeRenamer         = (*Node)(nil)
	_ fs.NodeSetattrer       = (*Node)(nil)
	_ fs.NodeOpener          = (*Node)(nil)
	_ fs.HandleReader        = (*Node)(nil)
	_ fs.HandleWriter        = (*Node)(nil)
	_ fs.HandleFlusher       = (*Node)(nil)
	_ fs.NodeFsyncer         = (*Node)(nil)
	_ fs.HandleReleaser      = (*Node)(nil)
	_ fs.NodeForgetter       = (*Node)(nil)
	_ fs.NodeGetxattrer      = (*Node)(nil)
	_ fs.NodeListxattrer     = (*Node)(nil)
	_ fs.NodeSetxattrer      = (*Node)(nil)
	_ fs.NodeRemovexattrer   = (*Node)(nil)
)

// New returns the FUSE layer over f.
func New(f *inode.FS, opts Options) *FS {
	if opts.AttrValid == 0 {
		opts.AttrValid = time.Second
	}
	if opts.EntryValid == 0 {
		opts.EntryValid = time.Second
	}
	if opts.FlushBytes == 0 {
		opts.FlushBytes = 64 << 20
	}
	if opts.DirtyBytes == 0 {
		opts.DirtyBytes = 128 << 20
	}
	if opts.OpTimeout == 0 {
		opts.OpTimeout = 30 * time.Second
	}
	if opts.StallTimeout == 0 {
		opts.StallTimeout = 2 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &FS{fs: f, opts: opts, log: opts.Logger, nodes: map[inode.ID]*Node{}}
	f.OnChange(s.changed)
	f.KeepOpen(s.keepOpen)
	return s
}

// keepOpen tells the inode layer whether file id, losing its last link,
// is open here: if so it is kept until its last handle closes (Release
// reclaims it), as POSIX wants.
func (s *FS) keepOpen(id inode.ID) bool {
	s.mu.Lock()
	n := s.nodes[id]
	s.mu.Unlock()
	if n == nil {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.opens == 0 {
		return false
	}
	n.orphan = true
	return true
}

// changed forgets what the node of inode id, if the kernel knows one, last
// read of it: this mount changed it (an unlink of one of its names, say).
func (s *FS) changed(id inode.ID) {
	s.mu.Lock()
	n := s.nodes[id]
	s.mu.Unlock()
	if n != nil {
		n.changed()
	}
}

// Root returns the root directory.
func (s *FS) Root() (fs.Node, error) { return s.node(inode.Root), nil }

// Statfs reports the space of the cluster, in 4 KiB units. Inodes are not
// a limited resource: it reports many, all free.
func (s *FS) Statfs(ctx context.Context, req *fuse.StatfsRequest, resp *fuse.StatfsResponse) (err error) {
	defer s.observe("statfs", time.Now(), &err)
	const unit = 4096
	resp.Bsize, resp.Frsize, resp.Namelen = unit, unit, 255
	resp.Files, resp.Ffree = 1<<40, 1<<40
	used, free := uint64(1<<40)*unit, uint64(1<<40)*unit
	if s.opts.Capacity != nil {
		ctx, cancel := s.ctx(ctx)
		defer cancel()
		var err error
		if used, free, err = s.opts.Capacity(ctx); err != nil {
			return s.errno("statfs", err)
		}
	}
	resp.Blocks, resp.Bfree, resp.Bavail = (used+free)/unit, free/unit, free/unit
	return nil
}

// node returns the one Node of inode id.
func (s *FS) node(id inode.ID) *Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nodes[id]
	if !ok {
		n = &Node{s: s, id: id}
		s.nodes[id] = n
	}
	return n
}

// ctx bounds an operation by the operation timeout alone. The kernel
// interrupts a request whenever a signal reaches the process waiting on
// it, which for Go programs is all the time (the runtime preempts with
// signals), and then hands the process whatever the answer is: an
// operation cut short would fail a system call that had nothing wrong. So
// an interrupted operation runs to its end, as a local filesystem's would.
func (s *FS) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), s.opts.OpTimeout)
}

// commitCtx bounds a commit of buffered writes by its progress
// (StallTimeout), not by a deadline; like ctx, it runs to its end when
// the kernel interrupts it.
func (s *FS) commitCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return inode.WithStall(context.WithoutCancel(ctx), s.opts.StallTimeout)
}

// observe tells Options.Observe, if set, of an operation that started at
// start and ended with *err.
func (s *FS) observe(op string, start time.Time, err *error) {
	if s.opts.Observe != nil {
		s.opts.Observe(op, time.Since(start), *err)
	}
}

// errno turns an error into what the kernel gets: its errno if it carries
// one, else EIO, with a log line saying why.
func (s *FS) errno(op string, err error) error {
	if err == nil {
		return nil
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		if e == syscall.EIO {
			s.log.Warn("I/O error", "op", op, "err", err)
		}
		return fuse.Errno(e)
	}
	s.log.Warn("I/O error", "op", op, "err", err)
	return fuse.Errno(syscall.EIO)
}

// Node is a file, directory or symlink.
type Node struct {
	s  *FS
	id inode.ID
	mu sync.Mutex
	w  *inode.Writer // buffered writes of the open handles, if any
	// last is the inode as last read, at lastAt, which an open file that
	// lost its last name keeps showing (with no links), as POSIX wants,
	// and reads use while it is younger than AttrValid.
	last   *inode.Attr
	lastAt time.Time
	// readEnd is where the last read ended: a read that starts there is
	// sequential, and fetches ahead.
	readEnd int64
	// changedAt is when the node last changed through this mount.
	changedAt time.Time
	// listing holds, for a directory, the entries its last listing read
	// with their inodes' attributes, at listedAt: a lookup soon after
	// takes its entry and attributes from there, once, instead of reading
	// both again (ls -l). Changes to the directory through this mount
	// drop the names they change. listUses counts the lookups it served.
	listing  map[string]inode.DirEntry
	listedAt time.Time
	listUses int
	// listChanged is when a change to the directory last began or ended:
	// a listing that began before it is not kept.
	listChanged time.Time
	// parent is the directory a directory was last found in, for its
	// listing's ".." (zero until known: the root, or not yet looked up).
	parent inode.ID
	// opens counts the kernel's open handles of the node; orphan says that
	// the file lost its last link while open, so the last Release
	// reclaims it.
	opens  int
	orphan bool
}

// walkUses is how many lookups a listing must have served for a lookup
// that finds it expired to list the directory again: something is going
// through the whole directory (ls -l, rm -rf of a large one), and one
// listing is cheaper than a request per name.
const walkUses = 64

// listed takes name's entry from the directory's last listing, if that is
// younger than the entry timeout (as recent as the kernel's own cache of
// names), and returns it with the listing's time.
func (n *Node) listed(name string) (inode.DirEntry, time.Time, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	d, ok := n.listing[name]
	if !ok || n.s.fs.Now().Sub(n.listedAt) >= n.s.opts.EntryValid {
		return inode.DirEntry{}, time.Time{}, false
	}
	delete(n.listing, name)
	n.listUses++
	return d, n.listedAt, true
}

// walked reports whether the directory's last listing has expired after
// serving a walk through it.
func (n *Node) walked() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.listing != nil && n.listUses >= walkUses && n.s.fs.Now().Sub(n.listedAt) >= n.s.opts.EntryValid
}

// unlist drops names from the directory's last listing: they are
// changing, or changed. Changes call it as they begin and as they end.
func (n *Node) unlist(names ...string) {
	n.mu.Lock()
	for _, name := range names {
		delete(n.listing, name)
	}
	n.listChanged = n.s.fs.Now()
	n.mu.Unlock()
}

// list reads the directory's entries and keeps those with attributes as
// its listing, unless a change began or ended meanwhile.
func (n *Node) list(ctx context.Context) ([]inode.DirEntry, error) {
	start := n.s.fs.Now()
	list, err := n.s.fs.Readdir(ctx, n.id)
	if err != nil {
		return nil, err
	}
	listing := map[string]inode.DirEntry{}
	for _, e := range list {
		// A directory's own times and link count are kept in its own
		// partition, which the listing does not read (see inode.Stat).
		if e.Attr != nil && e.Type != inode.TypeDir {
			listing[e.Name] = e
		}
	}
	n.mu.Lock()
	if n.listChanged.Before(start) {
		n.listing, n.listedAt, n.listUses = listing, start, 0
	}
	n.mu.Unlock()
	return list, nil
}

// offer gives the node its inode's attributes as a listing read them at
// at, for the kernel's attribute request that follows the lookup, unless
// the node changed since, has buffered writes, or knows a later state.
func (n *Node) offer(a inode.Attr, at time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.w != nil || !n.changedAt.Before(at) {
		return
	}
	if n.lastAt.Before(at) {
		n.last, n.lastAt = &a, at
	}
}

// recentAttr returns the node's inode as last read if that is younger than
// the attribute timeout (as recent as the kernel's own cache of it), else
// reads it.
func (n *Node) recentAttr(ctx context.Context) (inode.Attr, error) {
	a, _, err := n.recentAttrAt(ctx)
	return a, err
}

// recentAttrAt is recentAttr, also returning when the inode was read.
func (n *Node) recentAttrAt(ctx context.Context) (inode.Attr, time.Time, error) {
	n.mu.Lock()
	last, at := n.last, n.lastAt
	n.mu.Unlock()
	if last != nil && n.s.fs.Now().Sub(at) < n.s.opts.AttrValid {
		return *last, at, nil
	}
	at = n.s.fs.Now()
	a, err := n.attr(ctx)
	return a, at, err
}

// remember keeps a as the node's inode as last read.
func (n *Node) remember(a inode.Attr) {
	n.mu.Lock()
	n.last, n.lastAt = &a, n.s.fs.Now()
	n.mu.Unlock()
}

// attr reads the node's inode.
func (n *Node) attr(ctx context.Context) (inode.Attr, error) {
	start := n.s.fs.Now()
	a, err := n.s.fs.Stat(ctx, n.id)
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case err == nil && n.changedAt.Before(start) && n.lastAt.Before(start):
		n.last, n.lastAt = &a, start // kept as read when it was asked for
	case err == nil:
	case errors.Is(err, syscall.ENOENT) && n.last != nil:
		a, err = *n.last, nil
		a.Nlink = 0
	}
	return a, err
}

// found records that the node was found in directory dir.
func (n *Node) found(dir inode.ID) *Node {
	n.mu.Lock()
	n.parent = dir
	n.mu.Unlock()
	return n
}

// parentInum is the inode number of the directory's parent as last found
// (the root's own, and the node's own while unknown).
func (n *Node) parentInum() uint64 {
	n.mu.Lock()
	p := n.parent
	n.mu.Unlock()
	if p == (inode.ID{}) {
		return n.inum()
	}
	return (&Node{id: p}).inum()
}

// inum is the inode number the kernel sees.
func (n *Node) inum() uint64 {
	if n.id == inode.Root {
		return 1
	}
	return n.id.Num ^ (n.id.Part * 0x9e3779b97f4a7c15)
}

// writer returns the node's writer, making it on first use.
func (n *Node) writer() *inode.Writer {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.w == nil {
		n.w = n.s.fs.NewWriter(n.id)
	}
	return n.w
}

// flush commits the buffered writes, if any, bounded by its progress
// (see commitCtx) rather than by ctx's deadline.
func (n *Node) flush(ctx context.Context) error {
	n.mu.Lock()
	w := n.w
	n.mu.Unlock()
	if w == nil || !w.Dirty() {
		return nil
	}
	ctx, cancel := n.s.commitCtx(ctx)
	defer cancel()
	a, err := w.Flush(ctx)
	if err != nil {
		return stalled(ctx, err)
	}
	n.remember(a) // as committed: reads right after need not ask
	return nil
}

// stalled adds to err, if ctx ended because its commit made no progress,
// that it did.
func stalled(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("%w (%v)", err, cause)
	}
	return err
}

// changed forgets the node's inode as last read: it changed.
func (n *Node) changed() {
	n.mu.Lock()
	n.lastAt, n.changedAt = time.Time{}, n.s.fs.Now()
	n.mu.Unlock()
}

// fill reports a, with the open handles' buffered writes and attribute
// changes shown on it.
func (n *Node) fill(a inode.Attr, out *fuse.Attr) {
	n.mu.Lock()
	w := n.w
	n.mu.Unlock()
	if w != nil {
		// Not under n.mu: a flush holds the writer while it commits, and
		// the commit calls changed.
		a.Size = max(a.Size, w.End())
		w.Apply(&a, n.s.fs.Now().UnixNano())
	}
	out.Valid = n.s.opts.AttrValid
	out.Inode = n.inum()
	out.Size = a.Size
	out.Blocks = (out.Size + 511) / 512
	out.Atime, out.Mtime, out.Ctime = time.Unix(0, a.Atime), time.Unix(0, a.Mtime), time.Unix(0, a.Ctime)
	out.Mode = os.FileMode(a.Mode&0o777) | modeBits(a.Mode) | typeMode(a.Type)
	out.Nlink, out.Uid, out.Gid = a.Nlink, a.UID, a.GID
	out.Rdev = uint32(a.Rdev)
	out.BlockSize = 1 << 20
}

// fileTypes gives each file type's os.FileMode bits and directory entry
// type.
var fileTypes = []struct {
	t      inode.Type
	mode   os.FileMode
	dirent fuse.DirentType
}{
	{inode.TypeFile, 0, fuse.DT_File},
	{inode.TypeDir, os.ModeDir, fuse.DT_Dir},
	{inode.TypeSymlink, os.ModeSymlink, fuse.DT_Link},
	{inode.TypeFifo, os.ModeNamedPipe, fuse.DT_FIFO},
	{inode.TypeSocket, os.ModeSocket, fuse.DT_Socket},
	{inode.TypeCharDev, os.ModeDevice | os.ModeCharDevice, fuse.DT_Char},
	{inode.TypeBlockDev, os.ModeDevice, fuse.DT_Block},
}

// typeMode returns the os.FileMode bits of a file type.
func typeMode(t inode.Type) os.FileMode {
	for _, ft := range fileTypes {
		if ft.t == t {
			return ft.mode
		}
	}
	return 0
}

// fileType returns the file type of os.FileMode bits (a regular file for
// bits it does not know).
func fileType(m os.FileMode) inode.Type {
	for _, ft := range fileTypes {
		if ft.mode == m&os.ModeType {
			return ft.t
		}
	}
	return inode.TypeFile
}

// direntType returns the directory entry type of a file type.
func direntType(t inode.Type) fuse.DirentType {
	for _, ft := range fileTypes {
		if ft.t == t {
			return ft.dirent
		}
	}
	return fuse.DT_File
}

// modeBits turns setuid, setgid and sticky into os.FileMode bits.
func modeBits(m uint32) os.FileMode {
	var out os.FileMode
	if m&0o4000 != 0 {
		out |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= os.ModeSticky
	}
	return out
}

// posixMode turns an os.FileMode's permission bits back into POSIX ones.
func posixMode(m os.FileMode) uint32 {
	out := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		out |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		out |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		out |= 0o1000
	}
	return out
}

// Attr reports the node's attributes.
func (n *Node) Attr(ctx context.Context, out *fuse.Attr) (err error) {
	defer n.s.observe("attr", time.Now(), &err)
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	// The inode as last read, if recent: the kernel then keeps it only for
	// what is left of the attribute timeout, so that no answer it gives is
	// older than that.
	a, at, err := n.recentAttrAt(ctx)
	if err != nil {
		return n.s.errno("getattr", err)
	}
	n.fill(a, out)
	out.Valid = max(0, out.Valid-n.s.fs.Now().Sub(at))
	return nil
}

// Lookup finds a directory's entry.
func (n *Node) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (_ fs.Node, err error) {
	defer n.s.observe("lookup", time.Now(), &err)
	resp.EntryValid = n.s.opts.EntryValid
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	if n.walked() {
		if _, err := n.list(ctx); err != nil {
			return nil, n.s.errno("readdir", err)
		}
	}
	if d, at, ok := n.listed(req.Name); ok {
		c := n.s.node(d.ID)
		c.offer(*d.Attr, at)
		return c, nil
	}
	e, err := n.s.fs.Lookup(ctx, n.id, req.Name)
	if err != nil {
		return nil, n.s.errno("lookup", err)
	}
	return n.s.node(e.ID).found(n.id), nil
}

// ReadDirAll lists a directory.
func (n *Node) ReadDirAll(ctx context.Context) (_ []fuse.Dirent, err error) {
	defer n.s.observe("readdir", time.Now(), &err)
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	list, err := n.list(ctx)
	if err != nil {
		return nil, n.s.errno("readdir", err)
	}
	out := make([]fuse.Dirent, 0, len(list)+2)
	out = append(out, fuse.Dirent{Inode: n.inum(), Type: fuse.DT_Dir, Name: "."}, fuse.Dirent{Inode: n.parentInum(), Type: fuse.DT_Dir, Name: ".."})
	for _, e := range list {
		out = append(out, fuse.Dirent{Inode: (&Node{id: e.ID}).inum(), Type: direntType(e.Type), Name: e.Name})
	}
	return out, nil
}

func (n *Node) create(ctx context.Context, name string, na inode.NewAttr) (*Node, error) {
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	n.unlist(name)
	defer n.unlist(name)
	id, a, err := n.s.fs.Create(ctx, n.id, name, na)
	n.changed() // its times, and its link count for a directory
	if err != nil {
		return nil, n.s.errno("create", err)
	}
	c := n.s.node(id).found(n.id)
	c.remember(a)
	return c, nil
}

// Mkdir makes a directory.
func (n *Node) Mkdir(ctx context.Context, req *fuse.MkdirRequest) (_ fs.Node, err error) {
	defer n.s.observe("mkdir", time.Now(), &err)
	return n.create(ctx, req.Name, inode.NewAttr{Type: inode.TypeDir, Mode: posixMode(req.Mode &^ req.Umask), UID: req.Uid, GID: req.Gid})
}

// Create makes a file and opens it.
func (n *Node) Create(ctx context.Context, req *fuse.CreateRequest, resp *fuse.CreateResponse) (_ fs.Node, _ fs.Handle, err error) {
	defer n.s.observe("create", time.Now(), &err)
	c, err := n.create(ctx, req.Name, inode.NewAttr{Type: inode.TypeFile, Mode: posixMode(req.Mode &^ req.Umask), UID: req.Uid, GID: req.Gid})
	if err != nil {
		return nil, nil, err
	}
	c.opened()
	return c, c, nil
}

// Symlink makes a symbolic link.
func (n *Node) Symlink(ctx context.Context, req *fuse.SymlinkRequest) (_ fs.Node, err error) {
	defer n.s.observe("symlink", time.Now(), &err)
	return n.create(ctx, req.NewName, inode.NewAttr{Type: inode.TypeSymlink, Mode: 0o777, UID: req.Uid, GID: req.Gid, Target: req.Target})
}

// Mknod makes a fifo, a socket, a device or an empty file.
func (n *Node) Mknod(ctx context.Context, req *fuse.MknodRequest) (_ fs.Node, err error) {
	defer n.s.observe("mknod", time.Now(), &err)
	t := fileType(req.Mode)
	if t == inode.TypeDir || t == inode.TypeSymlink {
		return nil, fuse.Errno(syscall.EINVAL)
	}
	return n.create(ctx, req.Name, inode.NewAttr{Type: t, Mode: posixMode(req.Mode &^ req.Umask), UID: req.Uid, GID: req.Gid, Rdev: uint64(req.Rdev)})
}

// Readlink returns a symlink's target.
func (n *Node) Readlink(ctx context.Context, req *fuse.ReadlinkRequest) (_ string, err error) {
	defer n.s.observe("readlink", time.Now(), &err)
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	a, err := n.recentAttr(ctx)
	if err != nil {
		return "", n.s.errno("readlink", err)
	}
	if a.Type != inode.TypeSymlink {
		return "", fuse.Errno(syscall.EINVAL)
	}
	return a.Target, nil
}

// Remove unlinks a file or removes a directory.
func (n *Node) Remove(ctx context.Context, req *fuse.RemoveRequest) (err error) {
	defer n.s.observe("remove", time.Now(), &err)
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	n.unlist(req.Name)
	defer n.unlist(req.Name)
	defer n.changed()
	if req.Dir {
		return n.s.errno("rmdir", n.s.fs.Rmdir(ctx, n.id, req.Name))
	}
	return n.s.errno("unlink", n.s.fs.Unlink(ctx, n.id, req.Name))
}

// Link makes a new name for a file.
func (n *Node) Link(ctx context.Context, req *fuse.LinkRequest, old fs.Node) (_ fs.Node, err error) {
	defer n.s.observe("link", time.Now(), &err)
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	on, ok := old.(*Node)
	if !ok {
		return nil, fuse.Errno(syscall.EXDEV)
	}
	n.unlist(req.NewName)
	defer n.unlist(req.NewName)
	defer n.changed()
	if _, err := n.s.fs.Link(ctx, on.id, n.id, req.NewName); err != nil {
		return nil, n.s.errno("link", err)
	}
	return on, nil
}

// Rename moves an entry.
func (n *Node) Rename(ctx context.Context, req *fuse.RenameRequest, newDir fs.Node) (err error) {
	defer n.s.observe("rename", time.Now(), &err)
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	nd, ok := newDir.(*Node)
	if !ok {
		return fuse.Errno(syscall.EXDEV)
	}
	n.unlist(req.OldName)
	nd.unlist(req.NewName)
	defer n.unlist(req.OldName)
	defer nd.unlist(req.NewName)
	defer n.changed()
	defer nd.changed()
	return n.s.errno("rename", n.s.fs.Rename(ctx, n.id, req.OldName, nd.id, req.NewName, renameFlags(req)))
}

// Setattr changes attributes; a size change commits buffered writes first.
func (n *Node) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) (err error) {
	defer n.s.observe("setattr", time.Now(), &err)
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	var sa inode.SetAttr
	v := req.Valid
	if v.Mode() {
		m := posixMode(req.Mode)
		sa.Mode = &m
	}
	if v.Uid() {
		sa.UID = &req.Uid
	}
	if v.Gid() {
		sa.GID = &req.Gid
	}
	if v.Size() {
		if err := n.flush(ctx); err != nil {
			return n.s.errno("flush", err)
		}
		sa.Size = &req.Size
	}
	now := n.s.fs.Now().UnixNano()
	if v.Atime() || v.AtimeNow() {
		t := req.Atime.UnixNano()
		if v.AtimeNow() {
			t = now
		}
		sa.Atime = &t
	}
	if v.Mtime() || v.MtimeNow() {
		t := req.Mtime.UnixNano()
		if v.MtimeNow() {
			t = now
		}
		sa.Mtime = &t
	}
	n.mu.Lock()
	w := n.w
	n.mu.Unlock()
	held := false
	if w != nil {
		if held, err = w.SetAttr(ctx, sa); err != nil {
			return n.s.errno("setattr", err)
		}
	}
	if held {
		// Committed with the buffered writes (cp -a sets owner, mode and
		// times before it closes): one transaction instead of several.
		a, err := n.recentAttr(ctx)
		if err != nil {
			return n.s.errno("setattr", err)
		}
		n.fill(a, &resp.Attr)
		return nil
	}
	a, err := n.s.fs.Setattr(ctx, n.id, sa)
	if err != nil {
		return n.s.errno("setattr", err)
	}
	n.remember(a)
	n.fill(a, &resp.Attr)
	return nil
}

// Open opens a file; the node is its own handle, so all handles of a file
// share its buffered writes.
func (n *Node) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (_ fs.Handle, err error) {
	defer n.s.observe("open", time.Now(), &err)
	n.opened()
	return n, nil
}

// opened counts a handle the kernel opened.
func (n *Node) opened() {
	n.mu.Lock()
	n.opens++
	n.mu.Unlock()
}

// Read reads a file, after committing its buffered writes.
func (n *Node) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) (err error) {
	defer n.s.observe("read", time.Now(), &err)
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	if err := n.flush(ctx); err != nil {
		return n.s.errno("flush", err)
	}
	n.mu.Lock()
	sequential := req.Offset == n.readEnd
	n.readEnd = req.Offset + int64(req.Size)
	n.mu.Unlock()
	a, err := n.recentAttr(ctx)
	if err != nil {
		return n.s.errno("read", err)
	}
	data, err := n.s.fs.Slice(ctx, n.id, a, req.Offset, req.Size)
	if err != nil && !errors.Is(err, io.EOF) {
		return n.s.errno("read", err)
	}
	if sequential {
		n.s.fs.Prefetch(ctx, n.id, a, uint64(req.Offset)+uint64(len(data)))
	}
	resp.Data = data // the reply copies it
	return nil
}

// Write buffers a write, starting a background commit once the buffer is
// large. When the open files buffer more than DirtyBytes together, it
// commits its file's buffer and waits for that commit, so that memory
// stays bounded however many files are written at once.
func (n *Node) Write(ctx context.Context, req *fuse.WriteRequest, resp *fuse.WriteResponse) (err error) {
	defer n.s.observe("write", time.Now(), &err)
	w := n.writer()
	w.WriteAt(req.Data, req.Offset)
	resp.Size = len(req.Data)
	over := n.s.fs.Dirty() > n.s.opts.DirtyBytes
	if w.Buffered() >= n.s.opts.FlushBytes || over {
		ctx, cancel := n.s.commitCtx(ctx)
		defer cancel()
		if err := w.FlushBehind(ctx, n.s.opts.StallTimeout); err != nil {
			return n.s.errno("flush", err)
		}
		if over {
			if err := w.Wait(ctx); err != nil {
				return n.s.errno("flush", stalled(ctx, err))
			}
		}
	}
	return nil
}

// Flush commits buffered writes (on close).
func (n *Node) Flush(ctx context.Context, req *fuse.FlushRequest) (err error) {
	defer n.s.observe("flush", time.Now(), &err)
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	return n.s.errno("flush", n.flush(ctx))
}

// Fsync commits buffered writes.
func (n *Node) Fsync(ctx context.Context, req *fuse.FsyncRequest) (err error) {
	defer n.s.observe("fsync", time.Now(), &err)
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	return n.s.errno("fsync", n.flush(ctx))
}

// Release commits what is left when a handle closes, and reclaims a file
// unlinked while open when its last handle closes.
func (n *Node) Release(ctx context.Context, req *fuse.ReleaseRequest) (err error) {
	defer n.s.observe("release", time.Now(), &err)
	ctx, cancel := n.s.ctx(context.Background())
	defer cancel()
	if err := n.flush(ctx); err != nil {
		n.closed()
		return n.s.errno("release", err)
	}
	if n.closed() {
		return n.s.errno("release", n.s.fs.Reclaim(ctx, n.id))
	}
	return nil
}

// closed counts a handle the kernel released, and reports whether it was
// the last of a file that lost its last link meanwhile.
func (n *Node) closed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.opens = max(n.opens-1, 0)
	reclaim := n.opens == 0 && n.orphan
	if reclaim {
		n.orphan = false
	}
	return reclaim
}

// Forget drops the node when the kernel no longer knows it.
func (n *Node) Forget() {
	ctx, cancel := n.s.ctx(context.Background())
	defer cancel()
	if n.flush(ctx) != nil {
		return // keep it: its writes are not committed
	}
	n.s.mu.Lock()
	defer n.s.mu.Unlock()
	if n.s.nodes[n.id] == n {
		delete(n.s.nodes, n.id)
	}
}

// Getxattr reads an extended attribute.
func (n *Node) Getxattr(ctx context.Context, req *fuse.GetxattrRequest, resp *fuse.GetxattrResponse) (err error) {
	defer n.s.observe("getxattr", time.Now(), &err)
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	a, err := n.recentAttr(ctx) // the kernel asks before every write
	if err != nil {
		return n.s.errno("getxattr", err)
	}
	v, ok := a.Xattrs[req.Name]
	if !ok {
		return fuse.ErrNoXattr
	}
	resp.Xattr = v
	return nil
}

// Listxattr lists the extended attributes' names.
func (n *Node) Listxattr(ctx context.Context, req *fuse.ListxattrRequest, resp *fuse.ListxattrResponse) (err error) {
	defer n.s.observe("listxattr", time.Now(), &err)
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	a, err := n.recentAttr(ctx)
	if err != nil {
		return n.s.errno("listxattr", err)
	}
	names := make([]string, 0, len(a.Xattrs))
	for k := range a.Xattrs {
		names = append(names, k)
	}
	slices.Sort(names)
	resp.Append(names...)
	return nil
}

// Setxattr sets an extended attribute.
func (n *Node) Setxattr(ctx context.Context, req *fuse.SetxattrRequest) (err error) {
	defer n.s.observe("setxattr", time.Now(), &err)
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	return n.s.errno("setxattr", n.s.fs.SetXattr(ctx, n.id, req.Name, slices.Clone(req.Xattr), req.Flags))
}

// Removexattr removes an extended attribute.
func (n *Node) Removexattr(ctx context.Context, req *fuse.RemovexattrRequest) (err error) {
	defer n.s.observe("removexattr", time.Now(), &err)
	ctx, cancel := n.s.ctx(ctx)
	defer cancel()
	err = n.s.fs.RemoveXattr(ctx, n.id, req.Name)
	if errors.Is(err, syscall.ENODATA) {
		return fuse.ErrNoXattr
	}
	return n.s.errno("removexattr", err)
}
