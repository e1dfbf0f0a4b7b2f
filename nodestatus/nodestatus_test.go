package nodestatus

import (
	"reflect"
	"testing"
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

func TestCapacity(t *testing.T) {
	node := func(stored, lsm, free int64) Status {
		return Status{Replicas: 3, Blocks: blockstore.Stats{StoredBytes: stored}, Store: Store{LSMBytes: lsm, FreeBytes: free}}
	}
	used, free := Capacity([]Status{node(300, 30, 3000), node(300, 30, 3000), node(300, 30, 3000)})
	if used != 330 || free != 3000 {
		t.Errorf("3 nodes, 3 copies: used %d, free %d; want 330 and 3000", used, free)
	}
	// One node alone keeps one copy, whatever N is.
	if used, free := Capacity([]Status{node(100, 0, 500)}); used != 100 || free != 500 {
		t.Errorf("one node: used %d, free %d", used, free)
	}
}

// A status survives its encoding whole: every field set, none dropped.
func TestStatusRoundTrip(t *testing.T) {
	at := func(s int64) time.Time { return time.Unix(s, 0) }
	ref := func(b byte, addr string) ring.Ref { var id ring.ID; id[0] = b; return ring.Ref{ID: id, Addr: addr} }
	want := Status{
		Node:       NodeInfo{ID: "n1", GRPCAddr: "127.0.0.1:4624", HTTPAddr: "127.0.0.1:9090", Version: "v1"},
		Started:    at(100),
		DataDir:    "/var/lib/difuse",
		JoinedVia:  "127.0.0.1:4625",
		Store:      Store{LSMBytes: 1, VlogBytes: 2, FreeBytes: 3},
		RSSBytes:   4,
		Goroutines: 5,
		Replicas:   3,
		Blocks:     blockstore.NewStats(6, 7, 8, 4),
		Heal: Heal{State: "waiting", Waiting: []string{"127.0.0.1:4626"}, Passes: 9, Settled: true,
			PassStart: at(101), PassEnd: at(102), Progress: 0.5, Partitions: 10, Blocks: 11,
			MissingPartitions: 12, MissingBlocks: 13, ArcsCompared: 14, ArcsDiffered: 15,
			PartitionsSynced: 16, PartitionsDropped: 17, BlocksSent: 18, BytesSent: 19, BlocksDropped: 20,
			BlocksScrubbed: 21, BlocksCorrupt: 22, Errors: 23, LastError: "heal: x"},
		VNodes: []ring.VNodeStatus{{
			Self: ref(1, "a:1"), Pred: ref(9, "b:1"), Succs: []ring.Ref{ref(2, "b:1"), ref(3, "c:1")},
			Fingers: []ring.Finger{{Index: 0, Ref: ref(2, "b:1")}, {Index: 200, Ref: ref(3, "c:1")}},
		}},
		Recent: []LogEntry{{Time: at(103), Level: "WARN", Message: "slow"}},
		GC: GC{State: "marking", Done: 24, Total: 25, Cycles: 26, FreedBlocks: 27, FreedBytes: 28, Errors: 29, LastError: "gc: y",
			Last: &GCReport{Start: at(104), End: at(105), DryRun: true, Partitions: 30, Inodes: 31, Referenced: 32,
				Hosts: 33, Examined: 34, Freed: 35, FreedBytes: 36, Recent: 37, RecentBytes: 38, Pins: 39, Failed: []string{"h: z"}}},
	}
	var r fb.StatusReply
	if err := wire.Decode(EncodeStatus(want).FinishedBytes(), &r); err != nil {
		t.Fatal(err)
	}
	got, err := DecodeStatus(&r)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
	}
}
