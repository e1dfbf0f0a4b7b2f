// Package inode is the filesystem's data model on top of txlog and
// blockstore: inode records whose ids carry their partition, directory
// entries as records of the directory's partition, extents that point at
// blocks, and how each POSIX operation becomes one transaction (or, across
// directories, an atomic pair).
//
// It knows nothing of FUSE or of the kernel: package fsnode adapts it.
package inode
