package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/proctest"
	"github.com/difuse/difuse/node"
)

// browse loads url in headless Chromium, with time for the page's own
// requests, and returns the DOM it built; with shot set it also saves a
// screenshot there.
func browse(t *testing.T, url, shot string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + t.TempDir(),
		"--window-size=1400,1000", "--virtual-time-budget=5000"}
	if shot != "" {
		out, err := exec.CommandContext(ctx, "chromium", append(args, "--screenshot="+shot, url)...).CombinedOutput()
		if err != nil {
			t.Fatalf("chromium --screenshot: %v\n%s", err, out)
		}
	}
	dom, err := exec.CommandContext(ctx, "chromium", append(args, "--dump-dom", url)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	return string(dom)
}

// The status page of a 3-node cluster, loaded in a real browser, shows the
// three nodes up, in its table and on its drawing of the ring, every vnode
// of the ring; with one node killed it shows that node down. The
// screenshots are kept in $DIFUSE_ARTIFACTS (scripts/test.sh sets it).
func TestStatusPage(t *testing.T) {
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Skip("no chromium: scripts/test.sh installs it")
	}
	artifacts := os.Getenv("DIFUSE_ARTIFACTS")
	if artifacts == "" {
		artifacts = t.TempDir()
	}
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	dir0 := t.TempDir()
	_, m0 := startDaemon(t, dir0)
	_, m1 := startDaemon(t, t.TempDir(), "-j", m0[2])
	p2, m2 := startDaemon(t, t.TempDir(), "-j", m1[2])
	grpcs := []string{m0[2], m1[2], m2[2]}
	waitAllAgree(t, []string{m0[3], m1[3], m2[3]}, grpcs, 100, 30*time.Second)

	cluster := func() node.ClusterView {
		t.Helper()
		resp, err := proctest.HTTP.Get("http://" + m0[3] + "/v1/cluster")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var view node.ClusterView
		if err := json.NewDecoder(resp.Body).Decode(&view); err != nil {
			t.Fatal(err)
		}
		return view
	}
	view := cluster()
	if len(view.Nodes) != 3 || len(view.VNodes) == 0 {
		t.Fatalf("/v1/cluster: %d nodes, %d vnodes", len(view.Nodes), len(view.VNodes))
	}
	waitHealPass(t, m0[3])

	// Without a token the page asks for one; the address's fragment gives
	// it (as a person would paste it into the form).
	dom := browse(t, "http://"+m0[3]+"/", "")
	if !regexp.MustCompile(`<form id="login"[^>]*>`).MatchString(dom) || strings.Contains(dom, `<form id="login" class="panel login" hidden`) {
		t.Error("without a token the page does not ask for one")
	}
	tok, err := os.ReadFile(filepath.Join(dir0, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	page := "http://" + m0[3] + "/#token=" + strings.TrimSpace(string(tok))
	shot := filepath.Join(artifacts, "status-page.png")
	dom = browse(t, page, shot)
	rows := regexp.MustCompile(`<tr class="node-row" data-host="([^"]+)"><td>[^<]*</td><td class="ok">up</td>`).FindAllStringSubmatch(dom, -1)
	var up []string
	for _, r := range rows {
		up = append(up, r[1])
	}
	for _, g := range grpcs {
		if !strings.Contains(strings.Join(up, " "), g) {
			t.Errorf("the page does not show %s up (rows up: %v)", g, up)
		}
	}
	if n := strings.Count(dom, `class="vnode"`); n != len(view.VNodes) {
		t.Errorf("the ring drawing has %d vnodes, the ring %d", n, len(view.VNodes))
	}
	if !strings.Contains(dom, "3 / 3 up") {
		t.Error(`the page does not say "3 / 3 up"`)
	}
	t.Logf("screenshot of the 3-node cluster's page: %s", shot)

	if err := p2.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p2.Wait(10 * time.Second)
	// The dead node stays in the view all along: the ring soon leaves it
	// out, but healing keeps track of it for its grace time.
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		listed := false
		for _, nv := range cluster().Nodes {
			listed = listed || nv.Addr == m2[2]
		}
		if !listed {
			t.Fatalf("after a kill -9, /v1/cluster no longer lists %s", m2[2])
		}
	}
	shot = filepath.Join(artifacts, "status-page-one-down.png")
	deadline := time.Now().Add(30 * time.Second)
	for {
		dom = browse(t, page, "")
		if strings.Contains(dom, "2 / 3 up") && strings.Contains(dom, "down: no answer") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after a kill -9 the page does not show the node down")
		}
		time.Sleep(time.Second)
	}
	if dom = browse(t, page, shot); !strings.Contains(dom, "2 / 3 up") {
		t.Errorf("the page no longer shows 2 / 3 up")
	}
	t.Logf("screenshot with one node down: %s", shot)
}

// waitHealPass waits until the node at httpAddr has run a whole healing
// pass that started after the call.
func waitHealPass(t *testing.T, httpAddr string) {
	t.Helper()
	var first int64 = -1
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		st, err := nodeStatus(httpAddr)
		if err != nil {
			continue
		}
		if first < 0 {
			first = st.Heal.Passes
		}
		if st.Heal.Passes >= first+2 {
			return
		}
	}
	t.Fatalf("%s ran no whole healing pass in 90 s", httpAddr)
}
