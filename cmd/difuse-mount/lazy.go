package main

import "syscall"

// lazyUnmount detaches a busy mount (MNT_DETACH), as fusermount3 -uz does.
func lazyUnmount(mountpoint string) { syscall.Unmount(mountpoint, syscall.MNT_DETACH) }
