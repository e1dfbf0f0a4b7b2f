package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/proctest"
	"github.com/difuse/difuse/ring"
)

// lookups asks one node's HTTP interface for the replica sets of keys
// k0..k(n-1), a few requests at a time.
func lookups(httpAddr string, n int) ([][]ring.Ref, error) {
	out := make([][]ring.Ref, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for k := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			resp, err := proctest.HTTP.Get(fmt.Sprintf("http://%s/v1/lookup?key=%s&n=3", httpAddr, url.QueryEscape(fmt.Sprintf("key-%d", k))))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			var r struct {
				Replicas []ring.Ref `json:"replicas"`
			}
			if resp.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("status %d", resp.StatusCode)
				return
			}
			if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
				errs <- err
				return
			}
			out[k] = r.Replicas
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, fmt.Errorf("lookups at %s: %w", httpAddr, err)
	}
	return out, nil
}

// allAgree reports whether the nodes at httpAddrs give identical replica
// sets for keys, each made of len(hosts) distinct live hosts (at most 3).
func allAgree(httpAddrs, hosts []string, keys int) error {
	var first [][]ring.Ref
	for i, h := range httpAddrs {
		got, err := lookups(h, keys)
		if err != nil {
			return err
		}
		for k, reps := range got {
			if len(reps) != min(3, len(hosts)) {
				return fmt.Errorf("%s: key-%d has %d replicas: %v", h, k, len(reps), reps)
			}
			for _, r := range reps {
				if !slices.Contains(hosts, r.Addr) {
					return fmt.Errorf("%s: key-%d names %s, not a live host", h, k, r.Addr)
				}
			}
			if i > 0 && !slices.Equal(reps, first[k]) {
				return fmt.Errorf("key-%d: %v at %s, %v at %s", k, first[k], httpAddrs[0], reps, h)
			}
		}
		if i == 0 {
			first = got
		}
	}
	return nil
}

// waitAllAgree polls until allAgree holds and returns how long it took.
func waitAllAgree(t *testing.T, httpAddrs, hosts []string, keys int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := allAgree(httpAddrs, hosts, keys)
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("no agreement within %s: %v", within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Three difused processes on loopback form one ring: within 10 s all answer
// /v1/lookup identically for 1,000 keys. After kill -9 of one, the other two
// agree again, on live hosts only, within 10 s. The killed node restarted on
// its data directory, without -j, rejoins through the peers it remembers.
func TestThreeProcesses(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	_, m0 := startDaemon(t, dirs[0])
	_, m1 := startDaemon(t, dirs[1], "-j", m0[2])
	p2, m2 := startDaemon(t, dirs[2], "-j", m1[2])
	grpcs := []string{m0[2], m1[2], m2[2]}
	https := []string{m0[3], m1[3], m2[3]}

	took := waitAllAgree(t, https, grpcs, 1000, 10*time.Second)
	t.Logf("3 nodes agree on 1,000 keys %s after the last start", took.Round(time.Millisecond))

	if err := p2.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p2.Wait(10 * time.Second)
	took = waitAllAgree(t, https[:2], grpcs[:2], 1000, 10*time.Second)
	t.Logf("after kill -9 of one, the other two agree %s later", took.Round(time.Millisecond))

	startDaemon(t, dirs[2], "-b", grpcs[2], "-a", https[2])
	took = waitAllAgree(t, https, grpcs, 1000, 10*time.Second)
	t.Logf("restarted without -j, it rejoined; all agree %s after its start", took.Round(time.Millisecond))
}
