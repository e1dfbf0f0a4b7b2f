package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/difuse/difuse/internal/proctest"
)

// readEnv reads an environment file's assignments.
func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			env[k] = v
		}
	}
	return env
}

// The example systemd units are valid units (systemd-analyze verify), and
// their command lines, with the example environment files, are flags the
// binaries accept.
func TestSystemdUnits(t *testing.T) {
	dir := filepath.Join("..", "..", "contrib", "systemd")
	bin := filepath.Dir(proctest.Binary(t, "difused"))
	vars := regexp.MustCompile(`\$\{?(\w+)\}?`)
	for _, unit := range []string{"difused", "difuse-mount"} {
		b, err := os.ReadFile(filepath.Join(dir, unit+".service"))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "/usr/local/bin/", bin+"/")
		if _, err := exec.LookPath("systemd-analyze"); err == nil {
			tmp := filepath.Join(t.TempDir(), unit+".service")
			if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("systemd-analyze", "verify", tmp).CombinedOutput(); err != nil {
				t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
			}
		}
		env := readEnv(t, filepath.Join(dir, unit+".env"))
		m := regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("%s: no ExecStart", unit)
		}
		args := strings.Fields(vars.ReplaceAllStringFunc(m[1], func(v string) string {
			return env[vars.FindStringSubmatch(v)[1]]
		}))
		if unit == "difuse-mount" {
			args = args[:len(args)-1] // the mountpoint: -h must come before it
		}
		cmd := exec.Command(args[0], append(args[1:], "-h")...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: %v: %v\n%s", unit, args, err, out)
		}
	}
}
