// Package blockstore keeps content-addressed blocks: a local store that
// verifies every block's hash on read, content-defined chunking of files into
// blocks, and the distributed Set/Get/DeleteBlock operations on a block's
// replica set at a chosen consistency level.
//
// It knows nothing of inodes or directories: a block is bytes and a hash.
package blockstore
