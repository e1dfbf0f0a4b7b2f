package main

import (
	"errors"
	"net"
	"net/http"
	"time"

	"bazil.org/fuse"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/difuse/difuse/inode"
	"github.com/difuse/difuse/node"
)

// mountMetrics are what -metrics serves: the FUSE operations the kernel
// asked for, their times and errors, and the block cache's hits; Go's
// profiles are served beside them.
type mountMetrics struct {
	reg     *prometheus.Registry
	ops     *prometheus.CounterVec
	seconds *prometheus.HistogramVec
}

func newMountMetrics(ifs *inode.FS) *mountMetrics {
	m := &mountMetrics{reg: prometheus.NewRegistry()}
	m.ops = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "difuse_fuse_operations_total",
		Help: "FUSE operations served, by operation and result (ok, or the errno the kernel got)."}, []string{"op", "result"})
	m.seconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "difuse_fuse_operation_duration_seconds",
		Help: "Time to serve a FUSE operation.", Buckets: prometheus.ExponentialBuckets(0.00005, 4, 11)}, []string{"op"})
	hits := func() float64 { h, _ := ifs.CacheStats(); return float64(h) }
	misses := func() float64 { _, m := ifs.CacheStats(); return float64(m) }
	m.reg.MustRegister(m.ops, m.seconds,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "difuse_block_cache_hits_total",
			Help: "Block reads the mount's cache (or a read-ahead under way) answered."}, hits),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "difuse_block_cache_misses_total",
			Help: "Block reads that had to fetch the block from the cluster."}, misses),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "difuse_block_cache_hit_ratio",
			Help: "Hits over all block reads since the mount started (0 before any)."}, func() float64 {
			h, m := hits(), misses()
			if h+m == 0 {
				return 0
			}
			return h / (h + m)
		}),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observe counts one FUSE operation.
func (m *mountMetrics) observe(op string, took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
		// The file system hands back fuse errors as they are: assert
		// before unwrapping, which costs far more.
		e, ok := err.(fuse.ErrorNumber)
		if !ok {
			ok = errors.As(err, &e)
		}
		if ok {
			result = e.Errno().ErrnoName()
		}
	}
	m.ops.WithLabelValues(op, result).Inc()
	m.seconds.WithLabelValues(op).Observe(took.Seconds())
}

// serve serves the metrics at /metrics on ln until the server is closed.
func (m *mountMetrics) serve(ln net.Listener) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	node.ServeProfiles(mux)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return srv
}
