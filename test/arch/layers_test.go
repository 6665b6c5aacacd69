// Package arch enforces the layer rules of the hexagonal architecture on the
// real import graph (what depguard would check, without a linter):
// domain and ports use only the standard library, adapters never reach into
// the composition root nor into config (each owns its configuration type),
// Wire stays in app, and no production code imports test helpers. It also keeps the product apart from its tools: the service
// never imports the tools module (tools/, the load test and soak, with their
// plotting libraries), and the production binaries, built with
// proc.ProductionTags as make build and the Dockerfile build them, link none
// of dev mode's embedded parts (miniredis and its Lua interpreter).
package arch

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/ensure-user/ensure-user/internal/proc"
)

const module = "github.com/ensure-user/ensure-user"

// toolsModule is the module in tools/: the load test and the soak.
const toolsModule = module + "/tools"

type pkg struct {
	ImportPath   string
	Standard     bool
	Imports      []string
	Deps         []string
	TestImports  []string
	XTestImports []string
}

// listPackages lists the packages matching patterns, with build flags
// first when given, by import path.
func listPackages(t *testing.T, args ...string) map[string]pkg {
	t.Helper()
	if len(args) == 0 {
		args = []string{module + "/..."}
	}
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
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
		{"adapters own their configuration: they never import config (config imports them)",
			func(p string) bool { return strings.HasPrefix(p, module+"/adapters/") },
			func(d string) bool { return d != module+"/config" }},
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
			if strings.HasPrefix(d, module+"/test/") && !strings.HasPrefix(path, module+"/test/") {
				t.Errorf("production package %s depends on test helper %s", path, d)
			}
		}
		for _, d := range slices.Concat(p.Deps, p.TestImports, p.XTestImports) {
			if d == toolsModule || strings.HasPrefix(d, toolsModule+"/") {
				t.Errorf("the service never imports the tools module: %s (or its tests) depends on %s", path, d)
			}
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, "github.com/google/wire") && path != module+"/app" {
				t.Errorf("%s imports Wire; keep every Wire import in app/", path)
			}
		}
	}
}

// devOnly are the modules and packages only dev mode may link: the embedded
// Redis, its Lua interpreter, and the dev kit (signing key, embedded Redis).
var devOnly = []string{"github.com/alicebob/miniredis/v2", "github.com/yuin/gopher-lua", module + "/internal/devkit"}

// TestProductionBinariesLinkNoDevParts checks the binaries as shipped: the
// main packages under cmd/, built with proc.ProductionTags (make build, the
// Dockerfile), must not depend on dev mode's embedded parts. A plain build
// of cmd/ensure-user, which keeps dev mode, must: else the tag no longer
// separates anything and this test proves nothing.
func TestProductionBinariesLinkNoDevParts(t *testing.T) {
	t.Parallel()
	isDevOnly := func(dep string) bool {
		for _, d := range devOnly {
			if dep == d || strings.HasPrefix(dep, d+"/") {
				return true
			}
		}
		return false
	}
	prod := listPackages(t, "-tags", proc.ProductionTags, module+"/cmd/...")
	if len(prod) == 0 {
		t.Fatal("go list found no main package under cmd/")
	}
	for path, p := range prod {
		for _, d := range p.Deps {
			if isDevOnly(d) {
				t.Errorf("the production build (-tags %s) of %s depends on dev-only %s", proc.ProductionTags, path, d)
			}
		}
	}
	dev := listPackages(t, module+"/cmd/ensure-user")[module+"/cmd/ensure-user"]
	if !slices.Contains(dev.Deps, module+"/internal/devkit") {
		t.Errorf("a plain build of cmd/ensure-user does not link internal/devkit: is dev mode still behind -tags %s?", proc.ProductionTags)
	}
}

// TestServiceModuleLeavesToolsOut checks the service's go.mod: it does not
// require the tools module, nor the plotting library only the load test
// uses. (go list -m all still names gonum.org/v1/plot: golang.org/x/perf,
// benchstat's module, requires it without our build ever loading it.)
func TestServiceModuleLeavesToolsOut(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "mod", "edit", "-json").Output()
	if err != nil {
		t.Fatalf("go mod edit -json: %v", err)
	}
	var gomod struct {
		Require []struct{ Path string }
	}
	if err := json.Unmarshal(out, &gomod); err != nil {
		t.Fatal(err)
	}
	if len(gomod.Require) == 0 {
		t.Fatal("go.mod requires nothing: not the service's go.mod?")
	}
	for _, r := range gomod.Require {
		if r.Path == toolsModule || strings.HasPrefix(r.Path, "gonum.org/v1/plot") {
			t.Errorf("the service's go.mod requires %s, which only the tools module needs", r.Path)
		}
	}
}
