package node

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/pprof"
	"strconv"

	"github.com/difuse/difuse/ring"
)

// uiFiles are the status page's files, served at / and under /ui/.
//
//go:embed ui
var uiFiles embed.FS

// httpHandler serves the node's HTTP interface.
func (n *Node) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, uiFiles, "ui/index.html")
	})
	mux.Handle("GET /ui/", http.FileServerFS(uiFiles))
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Status())
	})
	mux.HandleFunc("GET /v1/cluster", n.handleCluster)
	mux.Handle("GET /metrics", n.metrics.handler())
	mux.HandleFunc("GET /v1/lookup", n.handleLookup)
	mux.HandleFunc("GET /v1/kv/{key...}", n.handleKVGet)
	mux.HandleFunc("PUT /v1/kv/{key...}", n.handleKVPut)
	mux.HandleFunc("DELETE /v1/kv/{key...}", n.handleKVDelete)
	mux.HandleFunc("PUT /v1/blocks", n.handleBlockPut)
	mux.HandleFunc("GET /v1/blocks/{hash}", n.handleBlockGet)
	mux.HandleFunc("GET /v1/pins/{hash}", n.handlePin)
	mux.HandleFunc("PUT /v1/pins/{hash}", n.handlePin)
	mux.HandleFunc("DELETE /v1/pins/{hash}", n.handlePin)
	mux.HandleFunc("GET /v1/fs/{path...}", n.handleFSGet)
	mux.HandleFunc("PUT /v1/fs/{path...}", n.handleFSPut)
	mux.HandleFunc("DELETE /v1/fs/{path...}", n.handleFSDelete)
	ServeProfiles(mux)
	return n.metrics.countHTTP(mux)
}

// ServeProfiles adds Go's profiles (CPU, heap, allocations, goroutines,
// traces) under /debug/pprof/ to mux.
func ServeProfiles(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
}

// handleLookup answers GET /v1/lookup?key=K&n=N with the key's hash and its
// replica set as this node computes it, leader first.
func (n *Node) handleLookup(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !q.Has("key") {
		writeError(w, http.StatusBadRequest, "missing query parameter key")
		return
	}
	count := n.ring.Config().Replicas
	if s := q.Get("n"); s != "" {
		c, err := strconv.Atoi(s)
		if err != nil || c < 1 || c > 64 {
			writeError(w, http.StatusBadRequest, "n must be a number from 1 to 64")
			return
		}
		count = c
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*n.ring.Config().CallTimeout)
	defer cancel()
	res, err := n.ring.Lookup(ctx, ring.HashKey([]byte(q.Get("key"))), count)
	switch {
	case errors.Is(err, ring.ErrNotMember):
		writeError(w, http.StatusServiceUnavailable, "this node has not joined a ring yet")
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Key string `json:"key"`
		ring.Result
	}{q.Get("key"), res})
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
