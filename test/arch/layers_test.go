// Package arch enforces the layer rules of the hexagonal architecture on the
// real import graph (what depguard would check, without a linter):
// domain and ports use only the standard library, adapters never reach into
// the composition root, Wire stays in app, and no production code imports
// test helpers.
package arch

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/ensure-user/ensure-user"

type pkg struct {
	ImportPath string
	Standard   bool
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) map[string]pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs[p.ImportPath] = p
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	return pkgs
}

func TestLayers(t *testing.T) {
	t.Parallel()
	pkgs := listPackages(t)
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	rules := []struct {
		name    string
		applies func(path string) bool
		allowed func(dep string) bool // for non-standard-library dependencies
	}{
		{"domain uses only the standard library",
			func(p string) bool { return p == module+"/domain" },
			func(string) bool { return false }},
		{"the use case depends only on domain and ports",
			func(p string) bool { return strings.HasPrefix(p, module+"/domain/") },
			func(d string) bool { return d == module+"/domain" || d == module+"/ports" }},
		{"ports speak only domain types",
			func(p string) bool { return p == module+"/ports" },
			func(d string) bool { return d == module+"/domain" }},
		{"adapters do not reach into app, cmd or another adapter (their shared parts are adapters/internal)",
			func(p string) bool { return strings.HasPrefix(p, module+"/adapters/") },
			func(d string) bool {
				return !strings.HasPrefix(d, module+"/app") && !strings.HasPrefix(d, module+"/cmd") &&
					(!strings.HasPrefix(d, module+"/adapters/") || strings.HasPrefix(d, module+"/adapters/internal/"))
			}},
	}
	for path, p := range pkgs {
		for _, r := range rules {
			if !r.applies(path) {
				continue
			}
			for _, d := range p.Deps {
				if std := !strings.Contains(strings.Split(d, "/")[0], "."); std || d == path {
					continue
				}
				if !r.allowed(d) {
					t.Errorf("%s: %s imports %s", r.name, path, d)
				}
			}
		}
		for _, d := range p.Deps {
			if strings.HasPrefix(d, module+"/test/") && !strings.HasPrefix(path, module+"/test/") && !strings.HasPrefix(path, module+"/cmd/loadtest") && !strings.HasPrefix(path, module+"/cmd/soak") {
				t.Errorf("production package %s depends on test helper %s", path, d)
			}
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, "github.com/google/wire") && path != module+"/app" {
				t.Errorf("%s imports Wire; keep every Wire import in app/", path)
			}
		}
	}
}
