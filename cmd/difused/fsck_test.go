package main

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/cli"
)

// difused fsck on a 3-node cluster: a sound filesystem passes; with a
// block deleted from one node's disk it reports that block (exit 1);
// -repair copies it back; the next check passes again.
func TestFsck(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	_, m0 := startDaemon(t, dirs[0])
	_, m1 := startDaemon(t, dirs[1], "-j", m0[2])
	_, m2 := startDaemon(t, dirs[2], "-j", m1[2])
	waitAllAgree(t, []string{m0[3], m1[3], m2[3]}, []string{m0[2], m1[2], m2[2]}, 100, 30*time.Second)

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
		code := run(append([]string{"fsck", "-b", m0[2] + "," + m2[2]}, args...), &out, &errb)
		t.Logf("fsck %v: exit %d\n%s%s", args, code, out.String(), errb.String())
		return code, out.String()
	}
	if code, out := fsck(); code != 0 || !strings.Contains(out, "3 directories, 10 files") || !strings.Contains(out, "no problems found") {
		t.Fatalf("fsck of a sound filesystem: exit %d", code)
	}

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
	resp, err := http.Get("http://" + m2[3] + "/v1/fs/a/b/f0")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("read after repair: %v", err)
	}
	resp.Body.Close()
}
