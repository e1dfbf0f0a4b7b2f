package node_test

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"
)

// metricValue returns the value of the sample of /metrics that matches
// name and labels exactly, or -1 if there is none.
func metricValue(t *testing.T, text, sample string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// /metrics counts what the node did: transaction-log requests by kind,
// level and outcome, gRPC requests by method, bytes in and out, blocks
// held.
func TestMetrics(t *testing.T) {
	n := startNode(t, t.TempDir(), "")
	for i := range 3 {
		if code, _, body := kvDo(t, n, "PUT", fmt.Sprintf("/v1/kv/m%d?consistency=quorum", i), []byte("v")); code != 200 {
			t.Fatalf("PUT = %d %s", code, body)
		}
	}
	if code, _, _ := kvDo(t, n, "PUT", "/v1/kv/m0", []byte("w"), "If-None-Match", "*"); code != 412 {
		t.Fatalf("create-only PUT of an existing key = %d", code)
	}
	if code, _, _ := kvDo(t, n, "GET", "/v1/kv/m1?consistency=quorum", nil); code != 200 {
		t.Fatalf("GET = %d", code)
	}
	if code, _, body := kvDo(t, n, "PUT", "/v1/blocks", []byte("some block")); code != 200 {
		t.Fatalf("PUT /v1/blocks = %d %s", code, body)
	}
	c := dial(t, n.GRPCAddr())
	if _, err := c.Status(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	code, _, text := kvDo(t, n, "GET", "/metrics", nil)
	if code != 200 {
		t.Fatalf("GET /metrics = %d", code)
	}
	for sample, want := range map[string]float64{
		`difuse_txlog_requests_total{kind="write",level="quorum",outcome="ok"}`:       4, // 3 PUTs and the block's pin
		`difuse_txlog_requests_total{kind="write",level="quorum",outcome="conflict"}`: 1,
		`difuse_txlog_requests_total{kind="read",level="quorum",outcome="ok"}`:        1,
		`difuse_txlog_request_duration_seconds_count{kind="read",level="quorum"}`:     1,
		`difuse_rpc_requests_total{code="OK",method="Status",service="Client"}`:       1,
		`difuse_blocks_held`: 1,
		`difuse_block_requests_total{level="quorum",op="set",outcome="ok"}`: 1,
	} {
		if got := metricValue(t, text, sample); got != want {
			t.Errorf("%s = %v, want %v", sample, got, want)
		}
	}
	for _, sample := range []string{
		`difuse_network_bytes_total{direction="in",proto="http"}`,
		`difuse_network_bytes_total{direction="out",proto="http"}`,
		`difuse_network_bytes_total{direction="out",proto="grpc"}`,
		`difuse_block_bytes_held`,
	} {
		if got := metricValue(t, text, sample); got <= 0 {
			t.Errorf("%s = %v, want more than 0", sample, got)
		}
	}
	for _, name := range []string{"difuse_replication_lag_entries", "difuse_heal_missing_copies", "difuse_partitions_held", "go_goroutines"} {
		if metricValue(t, text, name) < 0 {
			t.Errorf("no %s", name)
		}
	}
}
