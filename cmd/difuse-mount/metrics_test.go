package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// With -metrics the mount serves counts and times of the FUSE operations
// it served, by operation and result, and its block cache's hits.
func TestMountMetrics(t *testing.T) {
	data, mnt := t.TempDir(), t.TempDir()
	p := startMount(t, mnt, "-d", data, "-b", freeAddr(t), "-a", "127.0.0.1:0", "-metrics", "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := p.WaitLog(ctx, regexp.MustCompile(`msg="serving metrics" url=(\S+)`))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := os.WriteFile(filepath.Join(mnt, "f"+strconv.Itoa(i)), bytes.Repeat([]byte("block "), 1<<19), 0o644); err != nil { // not zeros, which are holes
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, "missing")); !os.IsNotExist(err) {
		t.Fatalf("stat of a missing file: %v", err)
	}
	for range 2 {
		if _, err := os.ReadFile(filepath.Join(mnt, "f0")); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	value := func(sample string) float64 {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindStringSubmatch(text)
		if m == nil {
			return -1
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	if got := value(`difuse_fuse_operations_total{op="create",result="ok"}`); got != 3 {
		t.Errorf("creates counted: %v, want 3", got)
	}
	if got := value(`difuse_fuse_operations_total{op="lookup",result="ENOENT"}`); got < 1 {
		t.Errorf("failed lookups counted: %v, want at least 1", got)
	}
	if got := value(`difuse_fuse_operations_total{op="write",result="ok"}`); got < 3 {
		t.Errorf("writes counted: %v", got)
	}
	if got := value(`difuse_fuse_operation_duration_seconds_count{op="create"}`); got != 3 {
		t.Errorf("create times: %v, want 3", got)
	}
	hits, misses := value(`difuse_block_cache_hits_total`), value(`difuse_block_cache_misses_total`)
	if hits < 0 || misses < 0 || hits+misses < 1 || value(`difuse_block_cache_hit_ratio`) < 0 {
		t.Errorf("block cache: %v hits, %v misses", hits, misses)
	}
	unmount(t, p, mnt)
}
