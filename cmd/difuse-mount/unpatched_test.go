//go:build !difuse_fusepatch

package main

// fusePatched says that this build has the project's patch of
// bazil.org/fuse (scripts/fusepatch.sh), which the tests of what it adds
// need.
const fusePatched = false
