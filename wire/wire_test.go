package wire

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/difuse/difuse/wire/fb"
)

// allTables has one value of every generated table type. TestAllTablesListed
// keeps it in step with the schema, so the fuzz target covers every decoder.
var allTables = []table{
	&fb.Ack{}, &fb.AppendReply{}, &fb.AppendRequest{}, &fb.Ballot{}, &fb.BlockAck{}, &fb.BlockCounts{},
	&fb.BlockHashes{}, &fb.BlockPiece{}, &fb.BlockPresence{}, &fb.BlockPutReply{}, &fb.BlockRequest{}, &fb.BlockStats{}, &fb.Change{},
	&fb.FetchReply{}, &fb.FetchRequest{}, &fb.Finger{}, &fb.GCCollectRequest{}, &fb.GCReport{}, &fb.GCStats{},
	&fb.GCSweepReply{}, &fb.GCSweepRequest{}, &fb.HealAck{}, &fb.HealArc{}, &fb.HealDigestsReply{},
	&fb.HealDigestsRequest{}, &fb.HealItem{}, &fb.HealItemsReply{}, &fb.HealItemsRequest{}, &fb.HealLeaveRequest{},
	&fb.HealStats{}, &fb.JoinReply{}, &fb.JoinRequest{}, &fb.LeavingRequest{}, &fb.LogEntry{}, &fb.NextReply{},
	&fb.NextRequest{}, &fb.NodeInfo{}, &fb.PingReply{}, &fb.PingRequest{}, &fb.PrepareReply{},
	&fb.PrepareRequest{}, &fb.ReadLocalRequest{}, &fb.Record{}, &fb.RectifyRequest{}, &fb.SnapshotReply{}, &fb.SnapshotRequest{},
	&fb.StateReply{}, &fb.StatusReply{}, &fb.StatusRequest{}, &fb.StoreStats{}, &fb.TxEntry{},
	&fb.TxReply{}, &fb.TxRequest{}, &fb.VNodeRef{}, &fb.VNodeRequest{}, &fb.VNodeState{},
	&fb.VNodesReply{}, &fb.VNodesRequest{},
}

func TestAllTablesListed(t *testing.T) {
	var listed []string
	for _, tb := range allTables {
		listed = append(listed, reflect.TypeOf(tb).Elem().Name())
	}
	if got, want := strings.Join(listed, " "), strings.Join(Embedded().Tables(), " "); got != want {
		t.Fatalf("allTables = %s\nschema has  %s", got, want)
	}
}

// samples returns well-formed messages with every field set.
func samples() [][]byte {
	var out [][]byte
	b := flatbuffers.NewBuilder(0)
	nodeInfo := func() flatbuffers.UOffsetT {
		id, ga, ha, ver := b.CreateString("n1"), b.CreateString("127.0.0.1:4624"), b.CreateString("127.0.0.1:9090"), b.CreateString("v0")
		fb.NodeInfoStart(b)
		fb.NodeInfoAddId(b, id)
		fb.NodeInfoAddGrpcAddr(b, ga)
		fb.NodeInfoAddHttpAddr(b, ha)
		fb.NodeInfoAddVersion(b, ver)
		return fb.NodeInfoEnd(b)
	}
	finish := func(off flatbuffers.UOffsetT) {
		b.Finish(off)
		out = append(out, append([]byte(nil), b.FinishedBytes()...))
		b.Reset()
	}

	finish(nodeInfo())

	payload := b.CreateByteVector([]byte("hello"))
	fb.PingRequestStart(b)
	fb.PingRequestAddSeq(b, 7)
	fb.PingRequestAddSentUnixNano(b, 123)
	fb.PingRequestAddPayload(b, payload)
	finish(fb.PingRequestEnd(b))

	ni := nodeInfo()
	payload = b.CreateByteVector([]byte("world"))
	fb.PingReplyStart(b)
	fb.PingReplyAddNode(b, ni)
	fb.PingReplyAddSeq(b, 7)
	fb.PingReplyAddPayload(b, payload)
	finish(fb.PingReplyEnd(b))

	fb.StatusRequestStart(b)
	finish(fb.StatusRequestEnd(b))

	vref := func(addr string) flatbuffers.UOffsetT {
		id, a := b.CreateByteVector(make([]byte, 32)), b.CreateString(addr)
		fb.VNodeRefStart(b)
		fb.VNodeRefAddId(b, id)
		fb.VNodeRefAddAddr(b, a)
		return fb.VNodeRefEnd(b)
	}
	refs := func(n int) flatbuffers.UOffsetT {
		offs := make([]flatbuffers.UOffsetT, n)
		for i := range offs {
			offs[i] = vref(fmt.Sprintf("127.0.0.%d:4624", i))
		}
		return TableVector(b, offs)
	}
	succs, cands := refs(3), refs(2)
	fb.NextReplyStart(b)
	fb.NextReplyAddFound(b, true)
	fb.NextReplyAddSuccs(b, succs)
	fb.NextReplyAddCandidates(b, cands)
	finish(fb.NextReplyEnd(b))

	ni = nodeInfo()
	dir, via := b.CreateString("/var/lib/difuse"), b.CreateString("127.0.0.1:4625")
	fb.StoreStatsStart(b)
	fb.StoreStatsAddLsmBytes(b, 1)
	fb.StoreStatsAddVlogBytes(b, 2)
	fb.StoreStatsAddFreeBytes(b, 3)
	st := fb.StoreStatsEnd(b)
	fb.StatusReplyStart(b)
	fb.StatusReplyAddNode(b, ni)
	fb.StatusReplyAddDataDir(b, dir)
	fb.StatusReplyAddJoinedVia(b, via)
	fb.StatusReplyAddStore(b, st)
	fb.StatusReplyAddRssBytes(b, 4)
	fb.StatusReplyAddGoroutines(b, 5)
	finish(fb.StatusReplyEnd(b))
	return out
}

func TestSamplesVerify(t *testing.T) {
	for _, buf := range samples() {
		ok := 0
		for _, tb := range allTables {
			fresh := reflect.New(reflect.TypeOf(tb).Elem()).Interface().(table)
			if Decode(buf, fresh) == nil {
				ok++
				touch(reflect.ValueOf(fresh), 0)
			}
		}
		if ok == 0 {
			t.Errorf("sample %x verifies as no table", buf)
		}
	}
}

func TestMalformed(t *testing.T) {
	good := samples()[2] // PingReply
	cases := map[string][]byte{
		"empty":         nil,
		"short root":    {1, 0},
		"root past end": {200, 0, 0, 0},
		"truncated":     good[:len(good)/2],
	}
	// A string whose length runs past the end of the buffer.
	bad := append([]byte(nil), good...)
	var r fb.PingReply
	if err := Decode(bad, &r); err != nil {
		t.Fatal(err)
	}
	var ni fb.NodeInfo
	r.Node(&ni)
	nt := ni.Table()
	idField := flatbuffers.UOffsetT(nt.Offset(4)) + nt.Pos
	idPos := idField + flatbuffers.GetUOffsetT(bad[idField:])
	flatbuffers.WriteUint32(bad[idPos:], 1<<30)
	cases["huge string"] = bad
	// A vtable offset that points outside the buffer.
	bad = append([]byte(nil), good...)
	root := flatbuffers.GetUOffsetT(bad)
	flatbuffers.WriteInt32(bad[root:], -1<<20)
	cases["vtable outside"] = bad

	for name, buf := range cases {
		err := Decode(buf, &fb.PingReply{})
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
	// A type the schema does not know is refused, not trusted.
	type notInSchema struct{ fb.PingReply }
	if err := Decode(good, &notInSchema{}); err == nil {
		t.Error("unknown table type accepted")
	}
}

// Every prefix and every single-byte corruption of a valid message either
// fails verification or can be read in full without a panic.
func TestCorruptionsNeverPanic(t *testing.T) {
	for _, buf := range samples() {
		for _, tb := range allTables {
			typ := reflect.TypeOf(tb).Elem()
			check := func(b []byte) {
				fresh := reflect.New(typ).Interface().(table)
				if Decode(b, fresh) == nil {
					touch(reflect.ValueOf(fresh), 0)
				}
			}
			for n := range len(buf) {
				check(buf[:n])
			}
			for i := range buf {
				for _, x := range []byte{0x00, 0xff, 0x7f, 0x80} {
					b := append([]byte(nil), buf...)
					b[i] = x
					check(b)
				}
			}
		}
	}
}

func TestParseSchemaFeatures(t *testing.T) {
	s, err := parseSchema(`
namespace t;
attribute "priority";
enum Level : ubyte { All = 0, Quorum, }
struct Hash { a:ulong; b:ulong; c:ulong; d:ulong; }
struct Mixed { x:ubyte; y:ulong; }
table Inner { h:Hash; }
table Outer (priority: 1) {
  level:Level = Quorum;
  names:[string];
  inners:[Inner];
  hashes:[Hash];
  key:string (required);
  old:int (deprecated);
}
rpc_service S { M(Outer):Inner (streaming: "server"); }
root_type Outer;`)
	if err != nil {
		t.Fatal(err)
	}
	outer := s.tables["Outer"]
	if len(outer) != 6 || !outer[4].required {
		t.Fatalf("Outer = %+v", outer)
	}
	if got := outer[3].typ.elem.size; got != 32 {
		t.Errorf("Hash size = %d, want 32", got)
	}
	if got := s.tables["Inner"][0].typ.size; got != 32 {
		t.Errorf("inline Hash size = %d", got)
	}
	if got := outer[0].typ.size; got != 1 {
		t.Errorf("enum size = %d", got)
	}

	// A buffer missing the required field fails.
	b := flatbuffers.NewBuilder(0)
	b.StartObject(6)
	b.PrependByteSlot(0, 1, 0)
	b.Finish(b.EndObject())
	if err := s.Verify("Outer", b.FinishedBytes()); err == nil || !strings.Contains(err.Error(), "required") {
		t.Errorf("missing required field: err = %v", err)
	}
	b.Reset()
	key := b.CreateString("k")
	b.StartObject(6)
	b.PrependUOffsetTSlot(4, key, 0)
	b.Finish(b.EndObject())
	if err := s.Verify("Outer", b.FinishedBytes()); err != nil {
		t.Errorf("with required field: %v", err)
	}

	// Offsets that share one payload are refused, so a small message
	// cannot decode into many copies of it.
	for _, copies := range []int{1, 2, 1000} {
		b.Reset()
		key, big := b.CreateString("k"), b.CreateString(strings.Repeat("x", 1000))
		b.StartVector(4, copies, 4)
		for range copies {
			b.PrependUOffsetT(big)
		}
		names := b.EndVector(copies)
		b.StartObject(6)
		b.PrependUOffsetTSlot(1, names, 0)
		b.PrependUOffsetTSlot(4, key, 0)
		b.Finish(b.EndObject())
		err := s.Verify("Outer", b.FinishedBytes())
		if (err == nil) != (copies == 1) || (err != nil && !strings.Contains(err.Error(), "shared")) {
			t.Errorf("%d offsets to one string: %v", copies, err)
		}
	}

	for _, bad := range []string{
		"union U { A, B }",
		"table T { a:int (id: 1); }",
		"table T { a:Nope; }",
		"table T { a:int; } table T { b:int; }",
		"rpc_service S { M(Missing):Missing; }",
		"table T { a:int }",
	} {
		if _, err := parseSchema(bad); err == nil {
			t.Errorf("parseSchema(%q) succeeded", bad)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, buf := range samples() {
		for i := range allTables {
			f.Add(uint8(i), buf)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, buf []byte) {
		typ := reflect.TypeOf(allTables[int(which)%len(allTables)]).Elem()
		fresh := reflect.New(typ).Interface().(table)
		if Decode(buf, fresh) == nil {
			touch(reflect.ValueOf(fresh), 0)
		}
	})
}

// touch calls every read accessor of a generated table, following nested
// tables and every vector element, so a verified buffer that an accessor
// cannot read panics here.
func touch(v reflect.Value, depth int) {
	if depth > 2*maxDepth {
		return
	}
	typ := v.Type()
	for i := range typ.NumMethod() {
		m := typ.Method(i)
		if m.Name == "Init" || m.Name == "Table" || strings.HasPrefix(m.Name, "Mutate") || strings.HasSuffix(m.Name, "ByKey") {
			continue
		}
		call := v.Method(i)
		mt := call.Type()
		length := func() int {
			l := v.MethodByName(m.Name + "Length")
			if !l.IsValid() {
				return 0
			}
			return int(l.Call(nil)[0].Int())
		}
		switch {
		case mt.NumIn() == 0:
			call.Call(nil)
		case mt.NumIn() == 1 && mt.In(0).Kind() == reflect.Int:
			for j := range length() {
				call.Call([]reflect.Value{reflect.ValueOf(j)})
			}
		case mt.NumIn() == 1 && mt.In(0).Kind() == reflect.Pointer:
			out := call.Call([]reflect.Value{reflect.Zero(mt.In(0))})
			if len(out) == 1 && !out[0].IsNil() {
				touch(out[0], depth+1)
			}
		case mt.NumIn() == 2 && mt.In(0).Kind() == reflect.Pointer && mt.In(1).Kind() == reflect.Int:
			for j := range length() {
				obj := reflect.New(mt.In(0).Elem())
				call.Call([]reflect.Value{obj, reflect.ValueOf(j)})
				touch(obj, depth+1)
			}
		}
	}
}
