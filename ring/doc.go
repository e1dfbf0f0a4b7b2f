// Package ring places keys on a Chord ring of virtual nodes: vnode ids,
// successor lists, predecessors, finger tables, the periodic maintenance
// that keeps them correct under churn, join and leave, and Lookup(key, n),
// which names a key's leader and replica set.
//
// It knows nothing of files, inodes, blocks or transaction logs: callers
// learn of membership changes through callbacks and move their own data.
package ring
