package main

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// Write a lot of data through the filesystem, delete it, collect: the
// block bytes stored on every node fall back to within 5% of where they
// started (1 GiB in the full pass, 64 MiB with -short); a dry run first
// frees nothing.
func TestGCFreesDeletedData(t *testing.T) {
	total := 1 << 30
	if testing.Short() {
		total = 64 << 20
	}
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	gcFlags := []string{"-gc-grace", "2s", "-gc-interval", "0"}
	_, m0 := startDaemon(t, dirs[0], gcFlags...)
	_, m1 := startDaemon(t, dirs[1], append(gcFlags, "-j", m0[2])...)
	_, m2 := startDaemon(t, dirs[2], append(gcFlags, "-j", m1[2])...)
	https := []string{m0[3], m1[3], m2[3]}
	waitAllAgree(t, https, []string{m0[2], m1[2], m2[2]}, 100, 30*time.Second)
	stored := func() []int64 {
		var out []int64
		for _, g := range []string{m0[2], m1[2], m2[2]} {
			var o, e strings.Builder
			if code := run([]string{"status", "-d", dirs[0], "-b", g}, &o, &e); code != 0 {
				t.Fatalf("status: %s", e.String())
			}
			var blocks, bytes int64
			var mibs float64
			for _, l := range strings.Split(o.String(), "\n") {
				if strings.HasPrefix(l, "blocks ") {
					fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "blocks")), "%d held, %f MiB", &blocks, &mibs)
					bytes = int64(mibs * (1 << 20))
				}
			}
			out = append(out, bytes)
		}
		return out
	}
	// Something that stays.
	rng := rand.New(rand.NewPCG(3, 4))
	keep := make([]byte, 8<<20)
	for i := range keep {
		keep[i] = byte(rng.Uint32())
	}
	if code, body := httpKV(t, "PUT", m0[3], "/v1/fs/keep", keep); code/100 != 2 {
		t.Fatalf("put keep: %d %s", code, body)
	}
	time.Sleep(time.Second)
	start := stored()
	const fileSize = 32 << 20
	for i := range total / fileSize {
		data := make([]byte, fileSize)
		for j := 0; j < len(data); j += 8 {
			v := rng.Uint64()
			for k := range 8 {
				data[j+k] = byte(v >> (8 * k))
			}
		}
		if code, body := httpKV(t, "PUT", https[i%3], fmt.Sprintf("/v1/fs/big%d", i), data); code/100 != 2 {
			t.Fatalf("put big%d: %d %s", i, code, body)
		}
	}
	full := stored()
	for i := range total / fileSize {
		if code, body := httpKV(t, "DELETE", https[i%3], fmt.Sprintf("/v1/fs/big%d", i), nil); code/100 != 2 {
			t.Fatalf("delete big%d: %d %s", i, code, body)
		}
	}
	time.Sleep(3 * time.Second) // past the grace time
	var out, errb strings.Builder
	if code := run([]string{"gc", "-d", dirs[1], "-b", m1[2], "-dry-run"}, &out, &errb); code != 0 {
		t.Fatalf("gc -dry-run: exit %d: %s", code, errb.String())
	}
	t.Logf("gc -dry-run:\n%s", out.String())
	if !strings.Contains(out.String(), "would free") {
		t.Fatalf("dry run output:\n%s", out.String())
	}
	if got := stored(); fmt.Sprint(got) != fmt.Sprint(full) {
		t.Fatalf("a dry run changed the stored bytes: %v, before %v", got, full)
	}
	out.Reset()
	if code := run([]string{"gc", "-d", dirs[1], "-b", m1[2]}, &out, &errb); code != 0 {
		t.Fatalf("gc: exit %d: %s", code, errb.String())
	}
	t.Logf("gc:\n%s", out.String())
	after := stored()
	for i := range after {
		t.Logf("node %d: %d MiB before, %d MiB with the data, %d MiB after the collection", i, start[i]>>20, full[i]>>20, after[i]>>20)
		if float64(after[i]) > float64(start[i])*1.05+float64(1<<20) {
			t.Errorf("node %d holds %d bytes after the collection, more than 5%% over the %d it started with", i, after[i], start[i])
		}
	}
	if code, body := httpKV(t, "GET", m2[3], "/v1/fs/keep", nil); code != 200 || body != string(keep) {
		t.Fatalf("the file that stays: %d, %d bytes", code, len(body))
	}
}
