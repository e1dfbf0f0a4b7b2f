package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/proctest"
	"github.com/difuse/difuse/ring"
)

// httpKV sends one key-value request and returns the status and body.
func httpKV(t *testing.T, method, httpAddr, path string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+httpAddr+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second, Transport: proctest.HTTP.Transport}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Values written at quorum through one node survive kill -9 of a key's
// leader: another node reads them at quorum.
func TestKVSurvivesLeaderKill(t *testing.T) {
	var procs []*proctest.Proc
	var grpcs, https, dirs []string
	for i := range 3 {
		var extra []string
		if i > 0 {
			extra = []string{"-j", grpcs[0]}
		}
		dirs = append(dirs, t.TempDir())
		p, m := startDaemon(t, dirs[i], extra...)
		procs, grpcs, https = append(procs, p), append(grpcs, m[2]), append(https, m[3])
	}
	waitAllAgree(t, https, grpcs, 200, 20*time.Second)

	const keys = 20
	for k := range keys {
		if code, body := httpKV(t, "PUT", https[0], fmt.Sprintf("/v1/kv/key-%d", k), fmt.Appendf(nil, "value-%d", k)); code != http.StatusOK {
			t.Fatalf("PUT key-%d: %d %s", k, code, body)
		}
	}
	code, body := httpKV(t, "GET", https[0], "/v1/lookup?key=kv/key-0", nil)
	var lookup struct{ Replicas []ring.Ref }
	if err := json.Unmarshal([]byte(body), &lookup); code != http.StatusOK || err != nil || len(lookup.Replicas) != 3 {
		t.Fatalf("lookup of key-0's partition: %d %s", code, body)
	}
	leader := -1
	for i, g := range grpcs {
		if g == lookup.Replicas[0].Addr {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatalf("the leader %s is none of %v", lookup.Replicas[0].Addr, grpcs)
	}
	if err := procs[leader].Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	procs[leader].Wait(10 * time.Second)
	via := https[(leader+1)%3]
	start := time.Now()
	for k := range keys {
		code, body := httpKV(t, "GET", via, fmt.Sprintf("/v1/kv/key-%d?consistency=quorum", k), nil)
		if code != http.StatusOK || body != fmt.Sprintf("value-%d", k) {
			t.Fatalf("GET key-%d at quorum after kill -9 of node %d: %d %s", k, leader, code, body)
		}
	}
	t.Logf("after kill -9 of key-0's leader, %d keys read at quorum in %s", keys, time.Since(start).Round(time.Millisecond))

	// Restarted on its directory, the node rejoins with its log, and every
	// key reads at all (every replica holds it and agrees) within a while.
	startDaemon(t, dirs[leader], "-b", grpcs[leader], "-a", https[leader])
	waitAllAgree(t, https, grpcs, 200, 20*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for k := 0; k < keys; {
		code, body := httpKV(t, "GET", https[leader], fmt.Sprintf("/v1/kv/key-%d?consistency=all", k), nil)
		switch {
		case code == http.StatusOK && body == fmt.Sprintf("value-%d", k):
			k++
		case time.Now().After(deadline):
			t.Fatalf("GET key-%d at all after the restart: %d %s", k, code, body)
		default:
			time.Sleep(100 * time.Millisecond)
		}
	}
}
