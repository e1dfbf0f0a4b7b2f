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

// httpHandler serves the node's HTTP interface. Every request but the
// status page's files needs a bearer token of the cluster (see guard);
// Config.OpenStatus opens the status and the metrics to anyone.
func (n *Node) httpHandler() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, need right, h http.HandlerFunc) { mux.Handle(pattern, n.guard(need, h)) }
	status := rightRead
	if n.cfg.OpenStatus {
		status = rightPublic
	}
	handle("GET /{$}", rightPublic, func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, uiFiles, "ui/index.html")
	})
	mux.Handle("GET /ui/", http.FileServerFS(uiFiles))
	handle("GET /v1/status", status, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Status())
	})
	handle("GET /v1/cluster", status, n.handleCluster)
	mux.Handle("GET /metrics", n.guard(status, n.metrics.handler()))
	handle("GET /v1/lookup", rightRead, n.handleLookup)
	handle("GET /v1/kv/{key...}", rightRead, n.handleKVGet)
	handle("PUT /v1/kv/{key...}", rightWrite, n.handleKVPut)
	handle("DELETE /v1/kv/{key...}", rightWrite, n.handleKVDelete)
	handle("PUT /v1/blocks", rightWrite, n.handleBlockPut)
	handle("GET /v1/blocks/{hash}", rightRead, n.handleBlockGet)
	handle("GET /v1/pins/{hash}", rightRead, n.handlePin)
	handle("PUT /v1/pins/{hash}", rightWrite, n.handlePin)
	handle("DELETE /v1/pins/{hash}", rightWrite, n.handlePin)
	handle("GET /v1/fs/{path...}", rightRead, n.handleFSGet)
	handle("PUT /v1/fs/{path...}", rightWrite, n.handleFSPut)
	handle("DELETE /v1/fs/{path...}", rightWrite, n.handleFSDelete)
	profiles := http.NewServeMux()
	ServeProfiles(profiles)
	mux.Handle("/debug/pprof/", n.guard(rightAdmin, profiles))
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
