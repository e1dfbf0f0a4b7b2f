package nodestatus

import (
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/ring"
)

// NodeInfo identifies a node and says where to reach it.
type NodeInfo struct {
	ID       string `json:"id"`
	GRPCAddr string `json:"grpc_addr"`
	HTTPAddr string `json:"http_addr"`
	Version  string `json:"version"`
}

// Store describes a node's local database.
type Store struct {
	LSMBytes  int64 `json:"lsm_bytes"`
	VlogBytes int64 `json:"vlog_bytes"`
	FreeBytes int64 `json:"free_bytes"`
}

// Status is a node's view of itself, as /v1/status and the Status call
// return it.
type Status struct {
	Node       NodeInfo  `json:"node"`
	Started    time.Time `json:"started"`
	DataDir    string    `json:"data_dir"`
	JoinedVia  string    `json:"joined_via,omitempty"`
	Store      Store     `json:"store"`
	RSSBytes   int64     `json:"rss_bytes"`
	Goroutines int       `json:"goroutines"`
	// Replicas is N, how many copies the cluster keeps of every key.
	Replicas int `json:"replicas"`
	// Blocks describes the blocks the node holds.
	Blocks blockstore.Stats `json:"blocks"`
	// Heal is the state of healing: rebalancing, anti-entropy, scrubbing.
	Heal Heal `json:"heal"`
	// VNodes is the state of the node's virtual nodes; empty until the node
	// has joined or created a ring.
	VNodes []ring.VNodeStatus `json:"vnodes"`
	// Recent holds the node's latest warnings and errors, oldest first.
	Recent []LogEntry `json:"recent"`
	// GC is the state of garbage collection.
	GC GC `json:"gc"`
}

// LogEntry is a warning or error a node logged.
type LogEntry struct {
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Message string    `json:"message"`
}

// Heal describes a node's healing, for /v1/status.
type Heal struct {
	// State is "idle" between passes, "healing" during one, "waiting" while
	// a host that left is within its grace time, "joining" while a new
	// node copies its share, "leaving" during a hand-off.
	State string `json:"state"`
	// Waiting names the hosts gone from the ring within their grace time.
	Waiting []string `json:"waiting,omitempty"`
	// Passes counts the passes completed.
	Passes int64 `json:"passes"`
	// Settled says that the last pass found every item this host holds
	// where the ring places it and level with the other replicas, and
	// changed nothing; it started after the ring last changed.
	Settled   bool      `json:"settled"`
	PassStart time.Time `json:"pass_start"`
	PassEnd   time.Time `json:"pass_end"`
	// Progress is the share of the current pass done, from 0 to 1.
	Progress float64 `json:"progress"`
	// Partitions and Blocks are what the last pass found held.
	Partitions int64 `json:"partitions"`
	Blocks     int64 `json:"blocks"`
	// MissingPartitions and MissingBlocks count the copies the last
	// complete pass found missing or behind on a replica of the ring's (or
	// a partition's replica set in force not yet the ring's); the pass then
	// made them. They are the under-replicated items a pass sees.
	MissingPartitions int64 `json:"missing_partitions"`
	MissingBlocks     int64 `json:"missing_blocks"`
	// Arcs compared with other replicas, and how many differed.
	ArcsCompared int64 `json:"arcs_compared"`
	ArcsDiffered int64 `json:"arcs_differed"`
	// Totals since the node started.
	PartitionsSynced  int64  `json:"partitions_synced"`
	PartitionsDropped int64  `json:"partitions_dropped"`
	BlocksSent        int64  `json:"blocks_sent"`
	BytesSent         int64  `json:"bytes_sent"`
	BlocksDropped     int64  `json:"blocks_dropped"`
	BlocksScrubbed    int64  `json:"blocks_scrubbed"`
	BlocksCorrupt     int64  `json:"blocks_corrupt"`
	Errors            int64  `json:"errors"`
	LastError         string `json:"last_error,omitempty"`
}

// GC is a node's garbage collector's state, for status and metrics.
type GC struct {
	// State is "idle", "marking" or "sweeping".
	State string `json:"state"`
	// Progress of the current phase: partitions scanned of those found,
	// then hosts swept of those asked.
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
	// Cycles counts the cycles this host ran; Last is the latest's report.
	Cycles int64     `json:"cycles"`
	Last   *GCReport `json:"last,omitempty"`
	// FreedBlocks and FreedBytes total what this host's own sweeps
	// deleted since it started, for every collector that asked.
	FreedBlocks int64  `json:"freed_blocks"`
	FreedBytes  int64  `json:"freed_bytes"`
	Errors      int64  `json:"errors"`
	LastError   string `json:"last_error,omitempty"`
}

// GCReport is what a garbage collection cycle did.
type GCReport struct {
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	DryRun bool      `json:"dry_run"`
	// Partitions and Inodes scanned, Pins found; Referenced blocks marked.
	Partitions int64 `json:"partitions"`
	Inodes     int64 `json:"inodes"`
	Pins       int64 `json:"pins"`
	Referenced int64 `json:"referenced"`
	// Hosts swept; blocks they examined, and freed (or would free).
	Hosts      int   `json:"hosts"`
	Examined   int64 `json:"examined"`
	Freed      int64 `json:"freed"`
	FreedBytes int64 `json:"freed_bytes"`
	// Recent blocks were unreferenced but kept: used within the grace time.
	Recent      int64 `json:"recent"`
	RecentBytes int64 `json:"recent_bytes"`
	// Failed names the hosts whose sweep failed, with the reason.
	Failed []string `json:"failed,omitempty"`
}

// Capacity sums nodes' space: the bytes their blocks and stores take, and
// those left on their disks, each divided by the number of copies kept,
// so that free is what files can still take. Nodes that share a disk
// count its free space once each: the sum is then an upper bound.
func Capacity(sts []Status) (used, free uint64) {
	copies := 1
	for _, st := range sts {
		used += uint64(max(st.Blocks.StoredBytes+st.Store.LSMBytes+st.Store.VlogBytes, 0))
		free += uint64(max(st.Store.FreeBytes, 0))
		copies = max(copies, min(st.Replicas, len(sts)))
	}
	return used / uint64(copies), free / uint64(copies)
}
