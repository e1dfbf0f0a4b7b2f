//go:build !difuse_fusepatch

package fsnode

import "bazil.org/fuse"

// Without the project's patch of bazil.org/fuse (see fusepatch.go), a
// rename carries no renameat2 flags: the kernel refuses them itself.
func renameFlags(*fuse.RenameRequest) uint32 { return 0 }
