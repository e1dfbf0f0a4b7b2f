// Package txlogrpc carries the transaction logs' calls over gRPC: Transport
// is the client side of txlog.Transport, Register serves a txlog.Handler as
// the TxLog service, and the Encode/Decode functions translate requests and
// replies, which the Client service's Txn uses too. Messages are
// FlatBuffers verified by package wire; transactions travel in their
// canonical encoding and are decoded by txlog.DecodeTx. The txlog errors a
// handler returns keep their identity across the network (carried as a
// google.rpc.ErrorInfo beside a fitting status code); any other failure is
// a transport error, which txlog retries.
package txlogrpc

import (
	"fmt"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/txlog"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

func encodeBallot(b *flatbuffers.Builder, bal txlog.Ballot) flatbuffers.UOffsetT {
	host := b.CreateString(bal.Host)
	fb.BallotStart(b)
	fb.BallotAddN(b, bal.N)
	fb.BallotAddHost(b, host)
	return fb.BallotEnd(b)
}

func decodeBallot(t *fb.Ballot) txlog.Ballot {
	if t == nil {
		return txlog.Ballot{}
	}
	return txlog.Ballot{N: t.N(), Host: string(t.Host())}
}

// decodeHash reads a hash field: absent gives the zero hash, 32 bytes the
// hash, anything else is an error.
func decodeHash(what string, b []byte) (txlog.Hash, error) {
	var h txlog.Hash
	switch len(b) {
	case 0:
	case len(h):
		copy(h[:], b)
	default:
		return h, fmt.Errorf("%w: %s of %d bytes", txlog.ErrBadRequest, what, len(b))
	}
	return h, nil
}

// hashVector adds h to b, or nothing (0) for the zero hash.
func hashVector(b *flatbuffers.Builder, h txlog.Hash) flatbuffers.UOffsetT {
	if h.IsZero() {
		return 0
	}
	return b.CreateByteVector(h[:])
}

func encodeTxs(b *flatbuffers.Builder, txs []*txlog.Tx) flatbuffers.UOffsetT {
	offs := make([]flatbuffers.UOffsetT, len(txs))
	for i, t := range txs {
		data := b.CreateByteVector(t.Encode())
		fb.TxEntryStart(b)
		fb.TxEntryAddData(b, data)
		offs[i] = fb.TxEntryEnd(b)
	}
	return wire.TableVector(b, offs)
}

func decodeTxs(n int, at func(*fb.TxEntry, int) bool) ([]*txlog.Tx, error) {
	out := make([]*txlog.Tx, 0, n)
	var e fb.TxEntry
	for i := range n {
		if !at(&e, i) {
			return nil, fmt.Errorf("%w: transaction %d missing", txlog.ErrBadRequest, i)
		}
		t, err := txlog.DecodeTx(e.DataBytes())
		if err != nil {
			return nil, fmt.Errorf("%w: transaction %d: %w", txlog.ErrBadRequest, i, err)
		}
		out = append(out, t)
	}
	return out, nil
}

func encodeRecord(b *flatbuffers.Builder, r txlog.Record) flatbuffers.UOffsetT {
	name := b.CreateString(r.Name)
	var value flatbuffers.UOffsetT
	if r.Value != nil {
		value = b.CreateByteVector(r.Value)
	}
	hash := hashVector(b, r.Hash)
	fb.RecordStart(b)
	fb.RecordAddName(b, name)
	fb.RecordAddExists(b, r.Exists)
	if value != 0 {
		fb.RecordAddValue(b, value)
	}
	if hash != 0 {
		fb.RecordAddHash(b, hash)
	}
	fb.RecordAddHeight(b, r.Height)
	return fb.RecordEnd(b)
}

func decodeRecord(t *fb.Record) (txlog.Record, error) {
	if t == nil {
		return txlog.Record{}, nil
	}
	h, err := decodeHash("record hash", t.HashBytes())
	if err != nil {
		return txlog.Record{}, err
	}
	r := txlog.Record{Name: string(t.Name()), Exists: t.Exists(), Hash: h, Height: t.Height()}
	if v := t.ValueBytes(); v != nil {
		r.Value = append([]byte{}, v...)
	}
	return r, nil
}

// encodeRecords adds a vector of records.
func encodeRecords(b *flatbuffers.Builder, recs []txlog.Record) flatbuffers.UOffsetT {
	offs := make([]flatbuffers.UOffsetT, len(recs))
	for i, r := range recs {
		offs[i] = encodeRecord(b, r)
	}
	return wire.TableVector(b, offs)
}

// decodeRecords reads a vector of n records.
func decodeRecords(n int, at func(*fb.Record, int) bool) ([]txlog.Record, error) {
	var out []txlog.Record
	var r fb.Record
	for i := range n {
		if !at(&r, i) {
			return nil, fmt.Errorf("%w: record %d missing", txlog.ErrBadRequest, i)
		}
		rec, err := decodeRecord(&r)
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// EncodeRequest returns a request as a TxRequest message.
func EncodeRequest(req txlog.Request) *flatbuffers.Builder {
	size := 64 + len(req.Partition) + len(req.Name)
	for _, c := range req.Write {
		size += 64 + len(c.Name) + len(c.Value)
	}
	b := flatbuffers.NewBuilder(size)
	partition, name, after, ifEmpty := b.CreateString(req.Partition), b.CreateString(req.Name), b.CreateString(req.After), b.CreateString(req.IfEmpty)
	var changes flatbuffers.UOffsetT
	if req.Kind == txlog.KindWrite {
		offs := make([]flatbuffers.UOffsetT, len(req.Write))
		for i, c := range req.Write {
			cname := b.CreateString(c.Name)
			var value, ifMatch flatbuffers.UOffsetT
			if c.Value != nil {
				value = b.CreateByteVector(c.Value)
			}
			if c.IfMatch != nil {
				ifMatch = b.CreateByteVector(c.IfMatch[:])
			}
			fb.ChangeStart(b)
			fb.ChangeAddName(b, cname)
			fb.ChangeAddDelete(b, c.Delete)
			fb.ChangeAddCheck(b, c.Check)
			if value != 0 {
				fb.ChangeAddValue(b, value)
			}
			if ifMatch != 0 {
				fb.ChangeAddIfMatch(b, ifMatch)
			}
			offs[i] = fb.ChangeEnd(b)
		}
		changes = wire.TableVector(b, offs)
	}
	var id flatbuffers.UOffsetT
	if !req.ID.IsZero() {
		id = b.CreateByteVector(req.ID[:])
	}
	fb.TxRequestStart(b)
	fb.TxRequestAddPartition(b, partition)
	if id != 0 {
		fb.TxRequestAddId(b, id)
	}
	fb.TxRequestAddLevel(b, fb.Level(req.Level))
	fb.TxRequestAddKind(b, fb.TxKind(req.Kind))
	fb.TxRequestAddName(b, name)
	fb.TxRequestAddAfter(b, after)
	fb.TxRequestAddIfEmpty(b, ifEmpty)
	fb.TxRequestAddLimit(b, uint32(max(req.Limit, 0)))
	if changes != 0 {
		fb.TxRequestAddChanges(b, changes)
	}
	b.Finish(fb.TxRequestEnd(b))
	return b
}

// DecodeRequest reads a verified TxRequest. Its errors wrap
// txlog.ErrBadRequest; the request's content is checked by the service.
func DecodeRequest(t *fb.TxRequest) (txlog.Request, error) {
	req := txlog.Request{
		Partition: string(t.Partition()),
		Level:     level.Level(t.Level()),
		Kind:      txlog.Kind(t.Kind()),
		Name:      string(t.Name()),
		After:     string(t.After()),
		IfEmpty:   string(t.IfEmpty()),
		Limit:     int(min(t.Limit(), 1<<20)),
	}
	if id := t.IdBytes(); id != nil {
		if len(id) != len(req.ID) {
			return req, fmt.Errorf("%w: a write ID of %d bytes (not %d)", txlog.ErrBadRequest, len(id), len(req.ID))
		}
		copy(req.ID[:], id)
	}
	if n := t.ChangesLength(); n > 0 || req.Kind == txlog.KindWrite {
		if n > txlog.MaxChanges {
			return req, fmt.Errorf("%w: a write of %d changes (at most %d)", txlog.ErrBadRequest, n, txlog.MaxChanges)
		}
		req.Write = make([]txlog.Change, n)
		var c fb.Change
		for i := range n {
			if !t.Changes(&c, i) {
				return req, fmt.Errorf("%w: change %d missing", txlog.ErrBadRequest, i)
			}
			ch := txlog.Change{Name: string(c.Name()), Delete: c.Delete(), Check: c.Check()}
			if v := c.ValueBytes(); v != nil {
				ch.Value = append([]byte{}, v...)
			}
			if m := c.IfMatchBytes(); m != nil {
				h, err := decodeHash("if_match", m)
				if err != nil || len(m) == 0 {
					return req, fmt.Errorf("%w: if_match of change %d is not a 32-byte hash", txlog.ErrBadRequest, i)
				}
				ch.IfMatch = &h
			}
			req.Write[i] = ch
		}
	}
	return req, nil
}

// EncodeResponse returns a response as a TxReply message.
func EncodeResponse(resp txlog.Response) *flatbuffers.Builder {
	size := 128 + len(resp.Record.Name) + len(resp.Record.Value)
	b := flatbuffers.NewBuilder(size)
	txHash := hashVector(b, resp.Tx.Hash)
	rec := encodeRecord(b, resp.Record)
	var history, records flatbuffers.UOffsetT
	if resp.History != nil {
		history = encodeTxs(b, resp.History)
	}
	if resp.Records != nil {
		records = encodeRecords(b, resp.Records)
	}
	var members flatbuffers.UOffsetT
	if resp.Members != nil {
		members = wire.StringVector(b, resp.Members)
	}
	fb.TxReplyStart(b)
	if txHash != 0 {
		fb.TxReplyAddTxHash(b, txHash)
	}
	fb.TxReplyAddTxHeight(b, resp.Tx.Height)
	fb.TxReplyAddRecord(b, rec)
	if history != 0 {
		fb.TxReplyAddHistory(b, history)
	}
	if records != 0 {
		fb.TxReplyAddRecords(b, records)
	}
	fb.TxReplyAddMore(b, resp.More)
	if members != 0 {
		fb.TxReplyAddMembers(b, members)
	}
	fb.TxReplyAddSynced(b, uint32(max(resp.Synced, 0)))
	b.Finish(fb.TxReplyEnd(b))
	return b
}

// DecodeResponse reads a verified TxReply.
func DecodeResponse(t *fb.TxReply) (txlog.Response, error) {
	var resp txlog.Response
	var err error
	if resp.Tx.Hash, err = decodeHash("transaction hash", t.TxHashBytes()); err != nil {
		return resp, err
	}
	resp.Tx.Height = t.TxHeight()
	if resp.Record, err = decodeRecord(t.Record(nil)); err != nil {
		return resp, err
	}
	if n := t.HistoryLength(); n > 0 {
		if resp.History, err = decodeTxs(n, t.History); err != nil {
			return resp, err
		}
	}
	if resp.Records, err = decodeRecords(t.RecordsLength(), t.Records); err != nil {
		return resp, err
	}
	resp.More = t.More()
	for i := range t.MembersLength() {
		resp.Members = append(resp.Members, string(t.Members(i)))
	}
	resp.Synced = int(t.Synced())
	return resp, nil
}
