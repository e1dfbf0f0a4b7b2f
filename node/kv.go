package node

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/txlog"
)

// The key-value API: GET, PUT and DELETE /v1/kv/{key}, with the consistency
// level in ?consistency=, compare-and-set through If-Match and
// If-None-Match: * on the ETag (the hash of the transaction that last
// changed the key), and GET ?history=1 listing the key's transactions.

// handleKVGet answers GET /v1/kv/{key}: the value, or with ?history=1 the
// key's transactions as JSON. Reads default to the leader level.
func (n *Node) handleKVGet(w http.ResponseWriter, r *http.Request) {
	key, partition, ok := kvKey(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	if q.Get("history") != "" && q.Get("history") != "0" {
		resp, err := n.do(r.Context(), txlog.Request{Partition: partition, Kind: txlog.KindHistory, Name: txlog.KVRecord})
		if err == nil && len(resp.History) == 0 {
			err = fmt.Errorf("%w: key %q has no history", txlog.ErrNotFound, key)
		}
		if err != nil {
			writeKVError(w, err)
			return
		}
		out := make([]historyEntry, len(resp.History))
		for i, t := range resp.History {
			out[i] = newHistoryEntry(t)
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	level, ok := kvLevel(w, r, level.Leader)
	if !ok {
		return
	}
	resp, err := n.do(r.Context(), txlog.Request{Partition: partition, Level: level, Kind: txlog.KindRead, Name: txlog.KVRecord})
	if err == nil && !resp.Record.Exists {
		err = fmt.Errorf("%w: key %q", txlog.ErrNotFound, key)
	}
	if err != nil {
		writeKVError(w, err)
		return
	}
	w.Header().Set("ETag", etag(resp.Record.Hash))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(resp.Record.Value)))
	w.WriteHeader(http.StatusOK)
	w.Write(resp.Record.Value)
}

// handleKVPut answers PUT /v1/kv/{key}: the body becomes the value. Writes
// default to the quorum level.
func (n *Node) handleKVPut(w http.ResponseWriter, r *http.Request) {
	n.kvWrite(w, r, false)
}

// handleKVDelete answers DELETE /v1/kv/{key}.
func (n *Node) handleKVDelete(w http.ResponseWriter, r *http.Request) {
	n.kvWrite(w, r, true)
}

func (n *Node) kvWrite(w http.ResponseWriter, r *http.Request, del bool) {
	_, partition, ok := kvKey(w, r)
	if !ok {
		return
	}
	level, ok := kvLevel(w, r, level.Quorum)
	if !ok {
		return
	}
	c := txlog.Change{Name: txlog.KVRecord, Delete: del}
	switch m, none := r.Header.Get("If-Match"), r.Header.Get("If-None-Match"); {
	case m != "" && none != "":
		writeError(w, http.StatusBadRequest, "give If-Match or If-None-Match, not both")
		return
	case none == "*":
		c.IfMatch = new(txlog.Hash) // the zero hash: the key must not exist
	case none != "":
		writeError(w, http.StatusBadRequest, "If-None-Match takes only *")
		return
	case m != "":
		h, err := txlog.ParseHash(strings.Trim(strings.TrimSpace(m), `"`))
		if err != nil {
			writeError(w, http.StatusBadRequest, "If-Match takes the ETag a read returned: "+err.Error())
			return
		}
		c.IfMatch = &h
	}
	if !del {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(n.cfg.MaxValueBytes)))
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("a value is at most %d bytes", n.cfg.MaxValueBytes))
			return
		case err != nil:
			writeError(w, http.StatusBadRequest, "reading the body: "+err.Error())
			return
		}
		c.Value = body
	}
	req := txlog.Request{Partition: partition, Level: level, Kind: txlog.KindWrite, Write: []txlog.Change{c}}
	if key := r.Header.Get(idempotencyHeader); key != "" {
		req.ID = writeID(partition, key)
	}
	resp, err := n.do(r.Context(), req)
	if err != nil {
		writeKVError(w, err)
		return
	}
	w.Header().Set("ETag", etag(resp.Tx.Hash))
	writeJSON(w, http.StatusOK, map[string]any{"hash": resp.Tx.Hash.String(), "height": resp.Tx.Height})
}

// kvKey returns the request's key and its partition, answering 400 for a
// malformed key.
func kvKey(w http.ResponseWriter, r *http.Request) (key, partition string, ok bool) {
	key = r.PathValue("key")
	partition, err := txlog.KVPartition(key)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error()+": use /v1/kv/{key}")
		return "", "", false
	}
	return key, partition, true
}

// kvLevel returns the request's consistency level, def if it names none,
// answering 400 for an unknown one.
func kvLevel(w http.ResponseWriter, r *http.Request, def level.Level) (level.Level, bool) {
	lv, err := level.Parse(r.URL.Query().Get("consistency"), def)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return 0, false
	}
	return lv, true
}

// idempotencyHeader names a write across a client's retries: a write whose
// key (with the same partition) an earlier request already applied is
// answered with that request's transaction instead of applied again.
const idempotencyHeader = "Idempotency-Key"

// writeID derives a write's ID from the client's idempotency key.
func writeID(partition, key string) txlog.WriteID {
	sum := sha256.Sum256([]byte(partition + "\x00" + key))
	return txlog.WriteID(sum[:16])
}

// committedHeader marks a 503 whose write took effect, on fewer replicas
// than its level asks.
const committedHeader = "Difuse-Committed"

func etag(h txlog.Hash) string { return `"` + h.String() + `"` }

// writeKVError answers a failed key-value request with the status its
// cause calls for.
func writeKVError(w http.ResponseWriter, err error) {
	code := http.StatusServiceUnavailable
	switch {
	case errors.Is(err, txlog.ErrBadRequest):
		code = http.StatusBadRequest
	case errors.Is(err, txlog.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, txlog.ErrConflict):
		code = http.StatusPreconditionFailed
	}
	if errors.Is(err, txlog.ErrCommittedShort) {
		w.Header().Set(committedHeader, "true") // the write took effect
	}
	msg := err.Error()
	if code == http.StatusServiceUnavailable && !errors.Is(err, txlog.ErrUnavailable) {
		msg = "unavailable: " + msg
	}
	writeError(w, code, msg)
}

// historyEntry is one transaction of a key's history, as JSON.
type historyEntry struct {
	Height uint64    `json:"height"`
	Hash   string    `json:"hash"`
	Prev   string    `json:"prev"`
	Ballot string    `json:"ballot"`
	Time   time.Time `json:"time"`
	Op     string    `json:"op"`
	Value  []byte    `json:"value,omitempty"`
}

func newHistoryEntry(t *txlog.Tx) historyEntry {
	e := historyEntry{Height: t.Height, Hash: t.Hash().String(), Prev: t.Prev.String(), Ballot: t.Ballot.String(), Time: time.Unix(0, t.Time).UTC()}
	for _, op := range t.Ops {
		if op.Name != txlog.KVRecord {
			continue
		}
		switch op.Kind {
		case txlog.OpSet:
			e.Op, e.Value = "set", op.Value
		case txlog.OpDelete:
			e.Op = "delete"
		}
	}
	return e
}
