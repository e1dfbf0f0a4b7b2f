package node

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/level"
)

// The block API: PUT /v1/blocks stores the body as one block and answers
// its hash; GET and HEAD /v1/blocks/{hash} read one. ?consistency= picks
// the level (default quorum for PUT, leader for GET).

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
	w.Header().Set("ETag", `"`+h.String()+`"`)
	writeJSON(w, http.StatusOK, map[string]any{"hash": h.String(), "size": len(data)})
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
