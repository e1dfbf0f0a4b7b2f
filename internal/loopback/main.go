// Command loopback mounts a directory through a minimal Go FUSE
// filesystem, go-fuse's loopback, with the kernel's FUSE passthrough off:
// every read and write goes through the daemon, as in any filesystem that
// does not keep its data in a local file. scripts/bench.sh measures it as
// the ceiling a Go FUSE filesystem has on the machine.
//
// Usage: loopback MOUNTPOINT DIR
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// file is what the bridge uses of a loopback file, without
// fs.FilePassthroughFder: a file handle that cannot name its backing file
// descriptor keeps the kernel from bypassing the daemon.
type file interface {
	fs.FileReader
	fs.FileWriter
	fs.FileFlusher
	fs.FileReleaser
	fs.FileFsyncer
	fs.FileGetattrer
	fs.FileSetattrer
	fs.FileLseeker
	fs.FileAllocater
}

// noPassthrough hides every method of the file but those of file.
type noPassthrough struct{ file }

// node is a loopback node whose open files pass no descriptor on.
type node struct{ fs.LoopbackNode }

func wrap(fh fs.FileHandle) fs.FileHandle {
	if f, ok := fh.(file); ok {
		return noPassthrough{f}
	}
	return fh
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	return wrap(fh), fl, errno
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	in, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	return in, wrap(fh), fl, errno
}

func newNode(root *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
	return &node{fs.LoopbackNode{RootData: root}}
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: loopback MOUNTPOINT DIR")
		os.Exit(2)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(os.Args[2], &st); err != nil {
		fmt.Fprintln(os.Stderr, "loopback:", err)
		os.Exit(1)
	}
	root := &fs.LoopbackRoot{Path: os.Args[2], Dev: uint64(st.Dev), NewNode: newNode}
	root.RootNode = newNode(root, nil, "", &st)
	sec := time.Second // the caches difuse-mount keeps by default
	server, err := fs.Mount(os.Args[1], root.RootNode, &fs.Options{
		AttrTimeout: &sec, EntryTimeout: &sec, NullPermissions: true,
		MountOptions: fuse.MountOptions{FsName: os.Args[2], Name: "loopback"},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "loopback:", err)
		os.Exit(1)
	}
	fmt.Println("mounted")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		server.Unmount()
	}()
	server.Wait()
}
