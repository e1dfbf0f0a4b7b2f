package node

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/txlog"
)

// metrics are what a node serves at /metrics, in a registry of its own (a
// process may run several nodes, as tests do).
type metrics struct {
	reg          *prometheus.Registry
	rpcs         *prometheus.CounterVec   // by service, method and code
	rpcSeconds   *prometheus.HistogramVec // by service and method
	txns         *prometheus.CounterVec   // by kind, level and outcome
	txnSeconds   *prometheus.HistogramVec // by kind and level
	blocks       *prometheus.CounterVec   // by operation, level and outcome
	blockSeconds *prometheus.HistogramVec // by operation and level
	bytes        *prometheus.CounterVec   // by protocol and direction
	refused      *prometheus.CounterVec   // by protocol and code
}

func newMetrics(n *Node) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.rpcs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "difuse_rpc_requests_total",
		Help: "gRPC requests served, by service, method and status code."}, []string{"service", "method", "code"})
	m.rpcSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "difuse_rpc_duration_seconds",
		Help: "Time to serve a gRPC request.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"service", "method"})
	m.txns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "difuse_txlog_requests_total",
		Help: "Transaction-log requests (key-value and metadata reads and writes) this node took from clients, by kind, consistency level and outcome."},
		[]string{"kind", "level", "outcome"})
	m.txnSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "difuse_txlog_request_duration_seconds",
		Help: "Time to run a transaction-log request, retries included.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)},
		[]string{"kind", "level"})
	m.blocks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "difuse_block_requests_total",
		Help: "Block reads, writes and deletes clients made through this node, by operation, consistency level and outcome."},
		[]string{"op", "level", "outcome"})
	m.blockSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "difuse_block_request_duration_seconds",
		Help: "Time to run a block request.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"op", "level"})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "difuse_network_bytes_total",
		Help: "Bytes this node received and sent, by protocol (grpc: message bytes on the wire; http: bodies)."},
		[]string{"proto", "direction"})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "difuse_refused_requests_total",
		Help: "Requests refused for their credentials (no certificate or token, a revoked or removed one, or one of too small a role), by protocol and code."},
		[]string{"proto", "code"})
	m.reg.MustRegister(m.rpcs, m.rpcSeconds, m.txns, m.txnSeconds, m.blocks, m.blockSeconds, m.bytes, m.refused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	gauge := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gauge("difuse_blocks_held", "Blocks in this node's store.", func() float64 { return float64(n.blocks.Stats().Blocks) })
	gauge("difuse_block_bytes_held", "Bytes of the blocks in this node's store.", func() float64 { return float64(n.blocks.Stats().StoredBytes) })
	counter("difuse_block_written_bytes_total", "Block bytes clients stored through this node.", func() float64 { return float64(n.blocks.Stats().WrittenBytes) })
	counter("difuse_block_new_bytes_total", "Of those, the bytes some replica did not hold yet.", func() float64 { return float64(n.blocks.Stats().NewBytes) })
	gauge("difuse_partitions_held", "Transaction-log partitions this node holds a replica of, as the last healing pass counted.",
		func() float64 { return float64(n.healer.Stats().Partitions) })
	gauge("difuse_replication_lag_entries", "Log entries the most lagging follower of a partition this node leads lacks.",
		func() float64 { most, _ := n.txlog.Lag(); return float64(most) })
	gauge("difuse_replication_lag_entries_sum", "Log entries the followers of the partitions this node leads lack together.",
		func() float64 { _, total := n.txlog.Lag(); return float64(total) })
	gauge("difuse_heal_missing_copies", "Copies of partitions and blocks the last healing pass found missing or behind on a replica.",
		func() float64 { h := n.healer.Stats(); return float64(h.MissingPartitions + h.MissingBlocks) })
	gauge("difuse_heal_settled", "1 if the last healing pass found everything in place and changed nothing.",
		func() float64 { return boolFloat(n.healer.Stats().Settled) })
	counter("difuse_heal_passes_total", "Healing passes completed.", func() float64 { return float64(n.healer.Stats().Passes) })
	counter("difuse_heal_partitions_synced_total", "Partitions anti-entropy and rebalancing synced.", func() float64 { return float64(n.healer.Stats().PartitionsSynced) })
	counter("difuse_heal_blocks_sent_total", "Blocks healing sent to other replicas.", func() float64 { return float64(n.healer.Stats().BlocksSent) })
	counter("difuse_heal_bytes_sent_total", "Bytes of the blocks healing sent.", func() float64 { return float64(n.healer.Stats().BytesSent) })
	counter("difuse_heal_dropped_total", "Partitions and blocks handed off and dropped.",
		func() float64 { h := n.healer.Stats(); return float64(h.PartitionsDropped + h.BlocksDropped) })
	counter("difuse_heal_blocks_scrubbed_total", "Blocks scrubbing checked.", func() float64 { return float64(n.healer.Stats().BlocksScrubbed) })
	counter("difuse_heal_blocks_damaged_total", "Damaged blocks scrubbing found and replaced.", func() float64 { return float64(n.healer.Stats().BlocksCorrupt) })
	counter("difuse_heal_errors_total", "Errors of healing passes.", func() float64 { return float64(n.healer.Stats().Errors) })
	counter("difuse_gc_cycles_total", "Garbage collection cycles this node ran.", func() float64 { return float64(n.gc.Stats().Cycles) })
	counter("difuse_gc_freed_blocks_total", "Blocks this node's sweeps deleted.", func() float64 { return float64(n.gc.Stats().FreedBlocks) })
	counter("difuse_gc_freed_bytes_total", "Bytes of the blocks this node's sweeps deleted.", func() float64 { return float64(n.gc.Stats().FreedBytes) })
	counter("difuse_gc_errors_total", "Errors of garbage collection.", func() float64 { return float64(n.gc.Stats().Errors) })
	counter("difuse_txlog_compactions_total", "Compactions of this node's transaction logs.", func() float64 { return float64(n.compact.get().Runs) })
	counter("difuse_txlog_compacted_entries_total", "Log entries this node's compactions deleted.", func() float64 { return float64(n.compact.get().Dropped) })
	counter("difuse_txlog_compaction_errors_total", "Compactions of this node's transaction logs that failed.", func() float64 { return float64(n.compact.get().Errors) })
	gauge("difuse_store_bytes", "Bytes of the node's database (LSM tree and value log).",
		func() float64 { st := n.db.Stats(); return float64(st.LSMBytes + st.VlogBytes) })
	gauge("difuse_store_free_bytes", "Free bytes on the data directory's file system.", func() float64 { return float64(n.db.Stats().FreeBytes) })
	return m
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// handler serves the metrics in Prometheus's text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// observeTxn counts a transaction-log request a client made here.
func (m *metrics) observeTxn(req txlog.Request, err error, took time.Duration) {
	kind, level := req.Kind.String(), req.Level.String()
	m.txns.WithLabelValues(kind, level, txnOutcome(err)).Inc()
	m.txnSeconds.WithLabelValues(kind, level).Observe(took.Seconds())
}

// observeBlock counts a block request a client made here.
func (m *metrics) observeBlock(op string, l level.Level, err error, took time.Duration) {
	outcome := "ok"
	switch {
	case errors.Is(err, blockstore.ErrNotFound):
		outcome = "not_found"
	case errors.Is(err, blockstore.ErrCorrupt):
		outcome = "corrupt"
	case errors.Is(err, blockstore.ErrUnavailable):
		outcome = "unavailable"
	case err != nil:
		outcome = "error"
	}
	m.blocks.WithLabelValues(op, l.String(), outcome).Inc()
	m.blockSeconds.WithLabelValues(op, l.String()).Observe(took.Seconds())
}

// txnOutcome names how a request ended.
func txnOutcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, txlog.ErrConflict):
		return "conflict"
	case errors.Is(err, txlog.ErrNotFound):
		return "not_found"
	case errors.Is(err, txlog.ErrBadRequest):
		return "bad_request"
	case errors.Is(err, txlog.ErrUnavailable):
		return "unavailable"
	}
	return "error"
}

// serverOptions count the gRPC requests the node serves, their times and
// their bytes.
func (m *metrics) serverOptions() []grpc.ServerOption {
	observe := func(full string, start time.Time, err error) {
		service, method := splitMethod(full)
		m.rpcs.WithLabelValues(service, method, status.Code(err).String()).Inc()
		m.rpcSeconds.WithLabelValues(service, method).Observe(time.Since(start).Seconds())
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			start := time.Now()
			resp, err := h(ctx, req)
			observe(info.FullMethod, start, err)
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			start := time.Now()
			err := h(srv, ss)
			observe(info.FullMethod, start, err)
			return err
		}),
		grpc.StatsHandler(byteCounter{in: m.bytes.WithLabelValues("grpc", "in"), out: m.bytes.WithLabelValues("grpc", "out")}),
	}
}

// splitMethod splits "/package.Service/Method".
func splitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	service, method, _ = strings.Cut(full, "/")
	return strings.TrimPrefix(service, "fb."), method
}

// byteCounter counts the bytes of gRPC messages on the wire.
type byteCounter struct{ in, out prometheus.Counter }

func (b byteCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (b byteCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (b byteCounter) HandleConn(context.Context, stats.ConnStats) {}

func (b byteCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	switch p := s.(type) {
	case *stats.InPayload:
		b.in.Add(float64(p.WireLength))
	case *stats.OutPayload:
		b.out.Add(float64(p.WireLength))
	}
}

// countHTTP counts the bytes of HTTP request and response bodies.
func (m *metrics) countHTTP(next http.Handler) http.Handler {
	in, out := m.bytes.WithLabelValues("http", "in"), m.bytes.WithLabelValues("http", "out")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			r.Body = &countingBody{ReadCloser: r.Body, c: in}
		}
		next.ServeHTTP(&countingWriter{ResponseWriter: w, c: out}, r)
	})
}

type countingBody struct {
	io.ReadCloser
	c prometheus.Counter
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.Add(float64(n))
	return n, err
}

type countingWriter struct {
	http.ResponseWriter
	c prometheus.Counter
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.c.Add(float64(n))
	return n, err
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
