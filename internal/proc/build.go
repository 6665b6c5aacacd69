package proc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// servicePath is the service module's path.
const servicePath = "github.com/ensure-user/ensure-user"

// ProductionTags are the build tags of the binaries as shipped (make build,
// the Dockerfile): nodev leaves ensure-user's dev mode, and with it the
// embedded Redis, out.
const ProductionTags = "nodev"

// ModuleRoot returns the directory of the service module's go.mod: the main
// module's when the working directory is in the service module, the
// directory the tools module's replace directive names when it is in tools/.
func ModuleRoot() (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", servicePath)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		return "", fmt.Errorf("not inside the ensure-user module or its tools module: go list -m %s: %v %s",
			servicePath, err, strings.TrimSpace(stderr.String()))
	}
	return dir, nil
}

// Build compiles the main packages pkgs (such as "./cmd/ensure-user") of the
// module at root into dir as `make build` does - the binary as shipped: no
// race detector, no cgo, -trimpath, ProductionTags - and returns their paths
// by package.
func Build(ctx context.Context, root, dir string, pkgs ...string) (map[string]string, error) {
	args := append([]string{"build", "-trimpath", "-tags", ProductionTags, "-o", dir + string(filepath.Separator)}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	bins := map[string]string{}
	for _, p := range pkgs {
		bins[p] = filepath.Join(dir, filepath.Base(p))
	}
	return bins, nil
}
