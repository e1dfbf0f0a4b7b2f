package node_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/internal/memtest"
	"github.com/difuse/difuse/node"
	"github.com/difuse/difuse/txlog"
)

// heapNow returns the live heap after a collection.
func heapNow() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// held counts the partitions the node holds whose names start with prefix.
func held(t *testing.T, n *node.Node, prefix string) int {
	t.Helper()
	count := 0
	if err := n.TxLog().Partitions(func(h txlog.Held) error {
		if strings.HasPrefix(h.Name, prefix) {
			count++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return count
}

// A message whose offsets share one payload, sent by a node, and
// 10,000 reads of keys that do not exist leave a node's heap and its
// partitions where they were.
func TestAdversarialInputsCostNothing(t *testing.T) {
	n := startNode(t, t.TempDir(), "")
	// A read finds a partition absent only on a ring that has been still
	// as long as a creation needs (four ticks here); on a ring that just
	// changed it takes the partition over, as a write would.
	time.Sleep(time.Second)
	before := heapNow()

	// An append whose 50 entries all point at one 4 MiB entry, which
	// would decode into 200 MiB.
	tx := &txlog.Tx{Partition: "kv/x", Height: 1, Ops: []txlog.Op{{Kind: txlog.OpSet, Name: "k", Value: make([]byte, 4<<20)}}}
	b := flatbuffers.NewBuilder(5 << 20)
	data := b.CreateByteVector(tx.Encode())
	b.StartObject(1)
	b.PrependUOffsetTSlot(0, data, 0)
	entry := b.EndObject()
	const copies = 50
	b.StartVector(4, copies, 4)
	for range copies {
		b.PrependUOffsetT(entry)
	}
	txs := b.EndVector(copies)
	part := b.CreateString("kv/x")
	b.StartObject(8)
	b.PrependUOffsetTSlot(0, part, 0)
	b.PrependUOffsetTSlot(4, txs, 0)
	b.Finish(b.EndObject())
	msg := b.FinishedBytes()
	member, err := n.Identity().NewMember(identity.RoleNode, "adversary")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(member.ClientConfig())),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []byte
	allocated := memtest.Allocated(func() { err = cc.Invoke(ctx, "/fb.TxLog/Append", msg, &out) })
	if err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("a %d-byte append of %d shared entries: %v", len(msg), copies, err)
	}
	if allocated > 64<<20 {
		t.Errorf("a %d-byte message made the node allocate %d bytes", len(msg), allocated)
	}
	msg, b = nil, nil

	for i := range 10_000 {
		if code, _, body := kvDo(t, n, "GET", fmt.Sprintf("/v1/kv/absent-%d", i), nil); code != 404 {
			t.Fatalf("GET of an absent key: %d %s", code, body)
		}
	}
	// Only the reads' partitions count: the node's own background work
	// (the garbage collector's lease) may create one meanwhile.
	if got := held(t, n, "kv/"); got != 0 {
		t.Errorf("the node holds %d key-value partitions after reads of absent keys", got)
	}
	if after := heapNow(); after > before+16<<20 {
		t.Errorf("the heap grew from %d to %d bytes", before, after)
	}
}
