package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/gc"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/txlog"
)

// The block API: PUT /v1/blocks stores the body as one block, pins it
// (unless ?pin=false) and answers its hash; GET and HEAD
// /v1/blocks/{hash} read one. ?consistency= picks the level (default
// quorum for PUT, leader for GET). A pin keeps a block that no file refers
// to from garbage collection: GET /v1/pins/{hash} says whether one is
// pinned, PUT pins a block already stored, DELETE unpins (gc.PinPartition).

// handleBlockPut answers PUT /v1/blocks.
func (n *Node) handleBlockPut(w http.ResponseWriter, r *http.Request) {
	l, ok := blockLevel(w, r, level.Quorum)
	if !ok {
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, n.cfg.MaxBlockBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("a block is at most %d bytes; split larger data into blocks", n.cfg.MaxBlockBytes))
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return
	}
	ctx, cancel := n.requestContext(r)
	defer cancel()
	h, err := n.blocks.Set(ctx, data, l)
	if err != nil {
		writeBlockError(w, err)
		return
	}
	pinned := r.URL.Query().Get("pin") != "false"
	if pinned {
		// After the block: a block stored and not yet pinned is recent,
		// which no collection takes within its grace time.
		if err := n.pin(ctx, h, true); err != nil {
			writeKVError(w, err)
			return
		}
	}
	w.Header().Set("ETag", `"`+h.String()+`"`)
	writeJSON(w, http.StatusOK, map[string]any{"hash": h.String(), "size": len(data), "pinned": pinned})
}

// pin pins block h, or unpins it, at quorum.
func (n *Node) pin(ctx context.Context, h blockstore.Hash, on bool) error {
	c := txlog.Change{Name: h.String(), Value: []byte{1}}
	if !on {
		c = txlog.Change{Name: h.String(), Delete: true}
	}
	_, err := n.txlog.Do(ctx, txlog.Request{Partition: gc.PinPartition(h), Level: level.Quorum, Kind: txlog.KindWrite, Write: []txlog.Change{c}})
	return err
}

// handlePin answers GET, PUT and DELETE /v1/pins/{hash}.
func (n *Node) handlePin(w http.ResponseWriter, r *http.Request) {
	h, err := blockstore.ParseHash(r.PathValue("hash"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := n.requestContext(r)
	defer cancel()
	switch r.Method {
	case http.MethodGet:
		resp, err := n.txlog.Do(ctx, txlog.Request{Partition: gc.PinPartition(h), Level: level.Quorum, Kind: txlog.KindRead, Name: h.String()})
		switch {
		case err != nil:
			writeKVError(w, err)
		case !resp.Record.Exists:
			writeError(w, http.StatusNotFound, "block "+h.String()+" is not pinned")
		default:
			writeJSON(w, http.StatusOK, map[string]any{"hash": h.String(), "pinned": true})
		}
		return
	case http.MethodPut:
		if _, err := n.blocks.Get(ctx, h, level.Leader); err != nil {
			writeBlockError(w, err)
			return
		}
	}
	if err := n.pin(ctx, h, r.Method == http.MethodPut); err != nil {
		writeKVError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleBlockGet answers GET and HEAD /v1/blocks/{hash}.
func (n *Node) handleBlockGet(w http.ResponseWriter, r *http.Request) {
	h, err := blockstore.ParseHash(r.PathValue("hash"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	l, ok := blockLevel(w, r, level.Leader)
	if !ok {
		return
	}
	ctx, cancel := n.requestContext(r)
	defer cancel()
	data, err := n.blocks.Get(ctx, h, l)
	if err != nil {
		writeBlockError(w, err)
		return
	}
	w.Header().Set("ETag", `"`+h.String()+`"`)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable") // a block never changes
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(data)
	}
}

func blockLevel(w http.ResponseWriter, r *http.Request, def level.Level) (level.Level, bool) {
	l, err := level.Parse(r.URL.Query().Get("consistency"), def)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return 0, false
	}
	return l, true
}

func writeBlockError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, blockstore.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, blockstore.ErrUnavailable):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		writeError(w, http.StatusServiceUnavailable, "unavailable: "+err.Error())
	}
}
