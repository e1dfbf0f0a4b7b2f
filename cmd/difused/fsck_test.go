package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/cli"
	"github.com/difuse/difuse/internal/proctest"
)

// difused fsck on a 3-node cluster: a sound filesystem passes; with a
// block deleted from one node's disk it reports that block (exit 1);
// -repair copies it back; the next check passes again.
func TestFsck(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	// Healing would mend the deleted block by itself, so its passes wait
	// an hour and the test checks below that none is running.
	slow := []string{"-heal-interval", "1h"}
	_, m0 := startDaemon(t, dirs[0], slow...)
	_, m1 := startDaemon(t, dirs[1], append(slow, "-j", m0[2])...)
	_, m2 := startDaemon(t, dirs[2], append(slow, "-j", m1[2])...)
	https := []string{m0[3], m1[3], m2[3]}
	waitAllAgree(t, https, []string{m0[2], m1[2], m2[2]}, 100, 30*time.Second)

	rng := rand.New(rand.NewPCG(1, 2))
	for _, p := range []string{"a/", "a/b/"} {
		if code, body := httpKV(t, "PUT", m0[3], "/v1/fs/"+p, nil); code != 200 && code != 201 {
			t.Fatalf("mkdir %s: %d %s", p, code, body)
		}
	}
	for i := range 10 {
		data := make([]byte, 64<<10+rng.IntN(1<<20))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		if code, body := httpKV(t, "PUT", m1[3], fmt.Sprintf("/v1/fs/a/b/f%d", i), data); code != 200 && code != 201 {
			t.Fatalf("put f%d: %d %s", i, code, body)
		}
	}
	fsck := func(args ...string) (int, string) {
		var out, errb strings.Builder
		code := run(append([]string{"fsck", "-d", dirs[0], "-b", m0[2] + "," + m2[2]}, args...), &out, &errb)
		t.Logf("fsck %v: exit %d\n%s%s", args, code, out.String(), errb.String())
		return code, out.String()
	}
	if code, out := fsck(); code != 0 || !strings.Contains(out, "3 directories, 10 files") || !strings.Contains(out, "no problems found") {
		t.Fatalf("fsck of a sound filesystem: exit %d", code)
	}

	// A ring change wakes a healing pass; wait until passes have stopped.
	waitHealQuiet(t, https, 5*time.Second, time.Minute)

	// Delete one block file from node 2's disk.
	var victim string
	filepath.WalkDir(filepath.Join(dirs[2], "blocks"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && victim == "" && len(d.Name()) == 64 {
			victim = p
		}
		return nil
	})
	if victim == "" {
		t.Fatal("node 2 holds no block")
	}
	if err := os.Remove(victim); err != nil {
		t.Fatal(err)
	}
	hash := filepath.Base(victim)
	if code, out := fsck(); code != cli.ExitFailure || !strings.Contains(out, "block "+hash+" is on 2 of 3 replicas: found") {
		t.Fatalf("fsck with a block missing: exit %d", code)
	}
	if code, out := fsck("-repair"); code != 0 || !strings.Contains(out, "all repaired") {
		t.Fatalf("fsck -repair: exit %d", code)
	}
	if _, err := os.Stat(victim); err != nil {
		t.Errorf("the block is not back on node 2: %v", err)
	}
	if code, _ := fsck(); code != 0 {
		t.Fatalf("fsck after the repair: exit %d", code)
	}
	resp, err := proctest.HTTP.Get("http://" + m2[3] + "/v1/fs/a/b/f0")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("read after repair: %v", err)
	}
	resp.Body.Close()
}

// waitHealQuiet waits until no node has started or ended a healing pass
// for quiet.
func waitHealQuiet(t *testing.T, httpAddrs []string, quiet, within time.Duration) {
	t.Helper()
	start, since := time.Now(), time.Now()
	last := ""
	for time.Since(since) < quiet {
		if time.Since(start) > within {
			t.Fatalf("healing passes did not stop within %s: %s", within, last)
		}
		var now strings.Builder
		for _, a := range httpAddrs {
			st, err := nodeStatus(a)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&now, "%s %d; ", st.Heal.State, st.Heal.Passes)
		}
		if now.String() != last || strings.Contains(last, "healing") {
			last, since = now.String(), time.Now()
		}
		time.Sleep(200 * time.Millisecond)
	}
}
