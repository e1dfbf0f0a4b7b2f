// Package proctest builds the difuse binaries once per test binary and runs
// them as real processes for multi-process tests. Every process it starts is
// killed, by PID, when the test that started it ends.
package proctest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Main runs a package's tests (call it from TestMain) and then removes the
// binaries Binary built, so that test runs leave nothing behind.
func Main(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// Binary returns the path of the named command (for example "difused"),
// built from this module on first use.
func Binary(t testing.TB, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "difuse-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "github.com/difuse/difuse/cmd/...")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

// Proc is a running process whose stderr is captured.
type Proc struct {
	Cmd  *exec.Cmd
	mu   sync.Mutex
	log  strings.Builder
	done chan struct{}
	err  error
}

// tokens maps the gRPC address of every node a test noted (NoteNode) to
// the join token of its cluster.
var tokens sync.Map

// NoteNode records that a node serves gRPC at addr and HTTP at httpAddr,
// started with args on the data directory dir: the first node of a
// cluster (args without -j) wrote its cluster's join token there; a node
// that joined through another is of that one's cluster. Start gives later
// processes joining through addr the token, and HTTP requests to httpAddr
// carry the node's admin token.
func NoteNode(t testing.TB, addr, httpAddr, dir string, args []string) {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join(dir, "admin-token")); err == nil {
		adminTokens.Store(httpAddr, strings.TrimSpace(string(b)))
	}
	if via := flagValue(args, "-j"); via != "" {
		if tok, ok := tokens.Load(strings.Split(via, ",")[0]); ok {
			tokens.Store(addr, tok)
		}
		return
	}
	b, err := os.ReadFile(filepath.Join(dir, "join-token"))
	if err != nil {
		return // a node that rejoins the peers it remembers
	}
	tokens.Store(addr, strings.TrimSpace(string(b)))
}

// adminTokens maps the HTTP address of every node a test noted to the
// admin token in its data directory.
var adminTokens sync.Map

// HTTP is the HTTP client of tests: a request to a node a test noted
// carries the admin token of that node, unless it has a token already.
var HTTP = &http.Client{Transport: adminTransport{}}

type adminTransport struct{}

func (adminTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if tok, ok := adminTokens.Load(r.URL.Host); ok && r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+tok.(string))
	}
	return http.DefaultTransport.RoundTrip(r)
}

// flagValue returns the value following the flag name in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// withToken adds -token to args that join through a noted node (-j) and
// give no token of their own.
func withToken(args []string) []string {
	via := flagValue(args, "-j")
	if via == "" || flagValue(args, "-token") != "" || flagValue(args, "-token-file") != "" {
		return args
	}
	tok, ok := tokens.Load(strings.Split(via, ",")[0])
	if !ok {
		return args
	}
	return append([]string{"-token", tok.(string)}, args...)
}

// Start runs the named binary with args (with the join token of the
// cluster it joins, see NoteNode). The process is killed when the test
// ends, if it is still running, and when the test binary dies (a
// timeout's panic skips the test's cleanups).
func Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	args = withToken(args)
	p := &Proc{Cmd: exec.Command(Binary(t, name), args...), done: make(chan struct{})}
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := p.Cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.Cmd.Stdout = io.Discard
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s %s stderr:\n%s", name, strings.Join(args, " "), p.Log())
		}
	})
	return p
}

// Log returns what the process has written to stderr so far.
func (p *Proc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// WaitLog waits until stderr matches re and returns the submatches of the
// first match.
func (p *Proc) WaitLog(ctx context.Context, re *regexp.Regexp) ([]string, error) {
	for {
		if m := re.FindStringSubmatch(p.Log()); m != nil {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %q: %w; stderr:\n%s", re, ctx.Err(), p.Log())
		case <-p.done:
			if m := re.FindStringSubmatch(p.Log()); m != nil {
				return m, nil
			}
			return nil, fmt.Errorf("process exited (%v) before logging %q; stderr:\n%s", p.err, re, p.Log())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error { return p.Cmd.Process.Signal(sig) }

// Wait waits up to timeout for the process to exit and returns its exit
// code.
func (p *Proc) Wait(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
		return p.Cmd.ProcessState.ExitCode(), nil
	case <-time.After(timeout):
		return -1, fmt.Errorf("process %d still running after %s", p.Cmd.Process.Pid, timeout)
	}
}
