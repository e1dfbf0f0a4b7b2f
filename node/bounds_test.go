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

// held counts the partitions the node holds.
func held(t *testing.T, n *node.Node) int {
	t.Helper()
	count := 0
	if err := n.TxLog().Partitions(func(txlog.Held) error { count++; return nil }); err != nil {
		t.Fatal(err)
	}
	return count
}

// A message whose offsets share one payload, sent by a node, and
// 10,000 reads of keys that do not exist leave a node's heap and its
// partitions where they were.
func TestAdversarialInputsCostNothing(t *testing.T) {
	n := startNode(t, t.TempDir(), "")
	before, parts := heapNow(), held(t, n)

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
	if got := held(t, n); got != parts {
		t.Errorf("the node holds %d partitions after reads of absent keys, %d before", got, parts)
	}
	if after := heapNow(); after > before+16<<20 {
		t.Errorf("the heap grew from %d to %d bytes", before, after)
	}
}
