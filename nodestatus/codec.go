package nodestatus

import (
	"fmt"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/ring/ringrpc"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

// EncodeNodeInfo adds n to b and returns its offset.
func EncodeNodeInfo(b *flatbuffers.Builder, n NodeInfo) flatbuffers.UOffsetT {
	id, ga, ha, ver := b.CreateString(n.ID), b.CreateString(n.GRPCAddr), b.CreateString(n.HTTPAddr), b.CreateString(n.Version)
	fb.NodeInfoStart(b)
	fb.NodeInfoAddId(b, id)
	fb.NodeInfoAddGrpcAddr(b, ga)
	fb.NodeInfoAddHttpAddr(b, ha)
	fb.NodeInfoAddVersion(b, ver)
	return fb.NodeInfoEnd(b)
}

// DecodeNodeInfo reads a verified NodeInfo table; nil gives the zero value.
func DecodeNodeInfo(t *fb.NodeInfo) NodeInfo {
	if t == nil {
		return NodeInfo{}
	}
	return NodeInfo{ID: string(t.Id()), GRPCAddr: string(t.GrpcAddr()), HTTPAddr: string(t.HttpAddr()), Version: string(t.Version())}
}

// encodeVNodeState adds one vnode's state to b and returns its offset.
func encodeVNodeState(b *flatbuffers.Builder, v ring.VNodeStatus) flatbuffers.UOffsetT {
	self := ringrpc.EncodeRef(b, v.Self)
	var pred flatbuffers.UOffsetT
	if !v.Pred.IsZero() {
		pred = ringrpc.EncodeRef(b, v.Pred)
	}
	succs := ringrpc.EncodeRefs(b, v.Succs)
	fingers := make([]flatbuffers.UOffsetT, len(v.Fingers))
	for i, f := range v.Fingers {
		ref := ringrpc.EncodeRef(b, f.Ref)
		fb.FingerStart(b)
		fb.FingerAddIndex(b, int32(f.Index))
		fb.FingerAddRef(b, ref)
		fingers[i] = fb.FingerEnd(b)
	}
	fv := wire.TableVector(b, fingers)
	fb.VNodeStateStart(b)
	fb.VNodeStateAddSelf(b, self)
	if pred != 0 {
		fb.VNodeStateAddPred(b, pred)
	}
	fb.VNodeStateAddSuccs(b, succs)
	fb.VNodeStateAddFingers(b, fv)
	return fb.VNodeStateEnd(b)
}

// decodeVNodeState reads one verified VNodeState.
func decodeVNodeState(t *fb.VNodeState) (ring.VNodeStatus, error) {
	var v ring.VNodeStatus
	var err error
	if v.Self, err = ringrpc.DecodeOptRef(t.Self(nil)); err != nil {
		return v, err
	}
	if v.Pred, err = ringrpc.DecodeOptRef(t.Pred(nil)); err != nil {
		return v, err
	}
	if v.Succs, err = ringrpc.DecodeRefs(t.SuccsLength(), t.Succs); err != nil {
		return v, err
	}
	var f fb.Finger
	for i := range t.FingersLength() {
		t.Fingers(&f, i)
		ref, err := ringrpc.DecodeOptRef(f.Ref(nil))
		if err != nil {
			return v, err
		}
		v.Fingers = append(v.Fingers, ring.Finger{Index: int(f.Index()), Ref: ref})
	}
	return v, nil
}

// EncodeStatus returns a finished builder holding s as a StatusReply.
func EncodeStatus(s Status) *flatbuffers.Builder {
	b := flatbuffers.NewBuilder(1024)
	vnodes := make([]flatbuffers.UOffsetT, len(s.VNodes))
	for i, v := range s.VNodes {
		vnodes[i] = encodeVNodeState(b, v)
	}
	vv := wire.TableVector(b, vnodes)
	node := EncodeNodeInfo(b, s.Node)
	dir, via := b.CreateString(s.DataDir), b.CreateString(s.JoinedVia)
	fb.StoreStatsStart(b)
	fb.StoreStatsAddLsmBytes(b, s.Store.LSMBytes)
	fb.StoreStatsAddVlogBytes(b, s.Store.VlogBytes)
	fb.StoreStatsAddFreeBytes(b, s.Store.FreeBytes)
	st := fb.StoreStatsEnd(b)
	fb.BlockStatsStart(b)
	fb.BlockStatsAddBlocks(b, s.Blocks.Blocks)
	fb.BlockStatsAddStoredBytes(b, s.Blocks.StoredBytes)
	fb.BlockStatsAddWrittenBytes(b, s.Blocks.WrittenBytes)
	fb.BlockStatsAddNewBytes(b, s.Blocks.NewBytes)
	bs := fb.BlockStatsEnd(b)
	hs := encodeHealStats(b, s.Heal)
	recent := make([]flatbuffers.UOffsetT, len(s.Recent))
	for i, e := range s.Recent {
		level, msg := b.CreateString(e.Level), b.CreateString(e.Message)
		fb.LogEntryStart(b)
		fb.LogEntryAddTimeUnixNano(b, e.Time.UnixNano())
		fb.LogEntryAddLevel(b, level)
		fb.LogEntryAddMessage(b, msg)
		recent[i] = fb.LogEntryEnd(b)
	}
	rv := wire.TableVector(b, recent)
	gcs := encodeGCStats(b, s.GC)
	fb.StatusReplyStart(b)
	fb.StatusReplyAddGc(b, gcs)
	fb.StatusReplyAddRecent(b, rv)
	fb.StatusReplyAddHeal(b, hs)
	fb.StatusReplyAddBlocks(b, bs)
	fb.StatusReplyAddNode(b, node)
	fb.StatusReplyAddStartUnixNano(b, s.Started.UnixNano())
	fb.StatusReplyAddDataDir(b, dir)
	fb.StatusReplyAddJoinedVia(b, via)
	fb.StatusReplyAddStore(b, st)
	fb.StatusReplyAddRssBytes(b, s.RSSBytes)
	fb.StatusReplyAddGoroutines(b, int32(s.Goroutines))
	fb.StatusReplyAddReplicas(b, int32(s.Replicas))
	fb.StatusReplyAddVnodes(b, vv)
	b.Finish(fb.StatusReplyEnd(b))
	return b
}

// DecodeStatus reads a verified StatusReply.
func DecodeStatus(r *fb.StatusReply) (Status, error) {
	s := Status{
		Node:       DecodeNodeInfo(r.Node(nil)),
		Started:    time.Unix(0, r.StartUnixNano()),
		DataDir:    string(r.DataDir()),
		JoinedVia:  string(r.JoinedVia()),
		RSSBytes:   r.RssBytes(),
		Goroutines: int(r.Goroutines()),
		Replicas:   int(r.Replicas()),
	}
	if st := r.Store(nil); st != nil {
		s.Store = Store{LSMBytes: st.LsmBytes(), VlogBytes: st.VlogBytes(), FreeBytes: st.FreeBytes()}
	}
	if bs := r.Blocks(nil); bs != nil {
		s.Blocks = blockstore.NewStats(bs.Blocks(), bs.StoredBytes(), bs.WrittenBytes(), bs.NewBytes())
	}
	if hs := r.Heal(nil); hs != nil {
		s.Heal = decodeHealStats(hs)
	}
	if g := r.Gc(nil); g != nil {
		s.GC = decodeGCStats(g)
	}
	var e fb.LogEntry
	for i := range r.RecentLength() {
		r.Recent(&e, i)
		s.Recent = append(s.Recent, LogEntry{Time: time.Unix(0, e.TimeUnixNano()), Level: string(e.Level()), Message: string(e.Message())})
	}
	var t fb.VNodeState
	for i := range r.VnodesLength() {
		r.Vnodes(&t, i)
		v, err := decodeVNodeState(&t)
		if err != nil {
			return Status{}, fmt.Errorf("status: vnode %d: %w", i, err)
		}
		s.VNodes = append(s.VNodes, v)
	}
	return s, nil
}

// encodeHealStats adds the healer's stats to b and returns their offset.
func encodeHealStats(b *flatbuffers.Builder, h Heal) flatbuffers.UOffsetT {
	state, waiting, lastErr := b.CreateString(h.State), wire.StringVector(b, h.Waiting), b.CreateString(h.LastError)
	fb.HealStatsStart(b)
	fb.HealStatsAddState(b, state)
	fb.HealStatsAddWaiting(b, waiting)
	fb.HealStatsAddPasses(b, h.Passes)
	fb.HealStatsAddSettled(b, h.Settled)
	fb.HealStatsAddPassStartUnixNano(b, unixNano(h.PassStart))
	fb.HealStatsAddPassEndUnixNano(b, unixNano(h.PassEnd))
	fb.HealStatsAddProgress(b, h.Progress)
	fb.HealStatsAddPartitions(b, h.Partitions)
	fb.HealStatsAddBlocks(b, h.Blocks)
	fb.HealStatsAddArcsCompared(b, h.ArcsCompared)
	fb.HealStatsAddArcsDiffered(b, h.ArcsDiffered)
	fb.HealStatsAddPartitionsSynced(b, h.PartitionsSynced)
	fb.HealStatsAddPartitionsDropped(b, h.PartitionsDropped)
	fb.HealStatsAddBlocksSent(b, h.BlocksSent)
	fb.HealStatsAddBytesSent(b, h.BytesSent)
	fb.HealStatsAddBlocksDropped(b, h.BlocksDropped)
	fb.HealStatsAddBlocksScrubbed(b, h.BlocksScrubbed)
	fb.HealStatsAddBlocksCorrupt(b, h.BlocksCorrupt)
	fb.HealStatsAddErrors(b, h.Errors)
	fb.HealStatsAddLastError(b, lastErr)
	fb.HealStatsAddMissingPartitions(b, h.MissingPartitions)
	fb.HealStatsAddMissingBlocks(b, h.MissingBlocks)
	return fb.HealStatsEnd(b)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// decodeHealStats reads a verified HealStats table.
func decodeHealStats(t *fb.HealStats) Heal {
	h := Heal{
		State: string(t.State()), Passes: t.Passes(), Settled: t.Settled(),
		PassStart: fromUnixNano(t.PassStartUnixNano()), PassEnd: fromUnixNano(t.PassEndUnixNano()), Progress: t.Progress(),
		Partitions: t.Partitions(), Blocks: t.Blocks(), ArcsCompared: t.ArcsCompared(), ArcsDiffered: t.ArcsDiffered(),
		PartitionsSynced: t.PartitionsSynced(), PartitionsDropped: t.PartitionsDropped(),
		BlocksSent: t.BlocksSent(), BytesSent: t.BytesSent(), BlocksDropped: t.BlocksDropped(),
		BlocksScrubbed: t.BlocksScrubbed(), BlocksCorrupt: t.BlocksCorrupt(), Errors: t.Errors(), LastError: string(t.LastError()),
		MissingPartitions: t.MissingPartitions(), MissingBlocks: t.MissingBlocks(),
	}
	for i := range t.WaitingLength() {
		h.Waiting = append(h.Waiting, string(t.Waiting(i)))
	}
	return h
}

// encodeGCStats adds the collector's stats to b and returns their offset.
func encodeGCStats(b *flatbuffers.Builder, g GC) flatbuffers.UOffsetT {
	var last flatbuffers.UOffsetT
	if g.Last != nil {
		last = EncodeGCReport(b, *g.Last)
	}
	state, lastErr := b.CreateString(g.State), b.CreateString(g.LastError)
	fb.GCStatsStart(b)
	fb.GCStatsAddState(b, state)
	fb.GCStatsAddDone(b, g.Done)
	fb.GCStatsAddTotal(b, g.Total)
	fb.GCStatsAddCycles(b, g.Cycles)
	if last != 0 {
		fb.GCStatsAddLast(b, last)
	}
	fb.GCStatsAddFreedBlocks(b, g.FreedBlocks)
	fb.GCStatsAddFreedBytes(b, g.FreedBytes)
	fb.GCStatsAddErrors(b, g.Errors)
	fb.GCStatsAddLastError(b, lastErr)
	return fb.GCStatsEnd(b)
}

// decodeGCStats reads a verified GCStats table.
func decodeGCStats(t *fb.GCStats) GC {
	g := GC{State: string(t.State()), Done: t.Done(), Total: t.Total(), Cycles: t.Cycles(),
		FreedBlocks: t.FreedBlocks(), FreedBytes: t.FreedBytes(), Errors: t.Errors(), LastError: string(t.LastError())}
	if r := t.Last(nil); r != nil {
		rep := DecodeGCReport(r)
		g.Last = &rep
	}
	return g
}

// EncodeGCReport adds a garbage collection cycle's report to b and returns its offset.
func EncodeGCReport(b *flatbuffers.Builder, r GCReport) flatbuffers.UOffsetT {
	failed := wire.StringVector(b, r.Failed)
	fb.GCReportStart(b)
	fb.GCReportAddStartUnixNano(b, r.Start.UnixNano())
	fb.GCReportAddEndUnixNano(b, r.End.UnixNano())
	fb.GCReportAddDryRun(b, r.DryRun)
	fb.GCReportAddPartitions(b, r.Partitions)
	fb.GCReportAddInodes(b, r.Inodes)
	fb.GCReportAddReferenced(b, r.Referenced)
	fb.GCReportAddHosts(b, int32(r.Hosts))
	fb.GCReportAddExamined(b, r.Examined)
	fb.GCReportAddFreed(b, r.Freed)
	fb.GCReportAddFreedBytes(b, r.FreedBytes)
	fb.GCReportAddFailed(b, failed)
	fb.GCReportAddRecent(b, r.Recent)
	fb.GCReportAddRecentBytes(b, r.RecentBytes)
	fb.GCReportAddPins(b, r.Pins)
	return fb.GCReportEnd(b)
}

// DecodeGCReport reads a verified GCReport.
func DecodeGCReport(t *fb.GCReport) GCReport {
	r := GCReport{Start: time.Unix(0, t.StartUnixNano()), End: time.Unix(0, t.EndUnixNano()), DryRun: t.DryRun(),
		Partitions: t.Partitions(), Inodes: t.Inodes(), Referenced: t.Referenced(), Hosts: int(t.Hosts()),
		Examined: t.Examined(), Freed: t.Freed(), FreedBytes: t.FreedBytes(), Recent: t.Recent(), RecentBytes: t.RecentBytes(), Pins: t.Pins()}
	for i := range t.FailedLength() {
		r.Failed = append(r.Failed, string(t.Failed(i)))
	}
	return r
}
