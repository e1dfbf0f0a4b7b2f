// Package txlog keeps per-record transaction logs: hash-chained
// transactions grouped by partition, replicated to the partition's replica
// set at a chosen consistency level, with ballots so that a change of leader
// never lets two leaders commit conflicting transactions, catch-up of lagging
// replicas and persistence in the local store.
//
// It stores opaque records: it knows nothing of files, inodes or blocks.
package txlog
