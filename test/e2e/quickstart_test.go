package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/test/testenv"
)

// TestQuickStart follows the README's Quick start the way a newcomer would:
// `make run` with no configuration at all, read the banner, paste the printed
// request, and get the confirmed answer; then mint another token with
// `ensure-user dev token` and use it too.
func TestQuickStart(t *testing.T) {
	t.Parallel()
	root := testenv.ModuleRoot(t)
	home := t.TempDir() // a fresh user: no state, no configuration
	env := map[string]string{"HOME": home}
	for _, k := range []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOFLAGS", "GOPROXY"} {
		out, err := exec.Command("go", "env", k).Output()
		if err != nil {
			t.Fatal(err)
		}
		env[k] = strings.TrimSpace(string(out)) // keep the build cache: a fresh HOME would rebuild everything
	}
	if ln, err := net.Listen("tcp", "127.0.0.1:8000"); err == nil {
		ln.Close()
	} else {
		// Something on this machine already uses the dev port; the test must
		// not fail for that, so only the port differs from the README.
		t.Logf("127.0.0.1:8000 is taken (%v); using a free port", err)
		env["HTTP_ADDR"] = "127.0.0.1:0"
	}
	mk := testenv.StartIn(t, root, "make", env, "run")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	err := mk.WaitOutput(ctx, func(out string, _ []map[string]any) bool {
		return strings.Contains(out, "\ncurl ")
	})
	if err != nil {
		t.Fatalf("no curl line in the banner: %v\n%s", err, mk.Output())
	}
	curlLine := bannerCurl(t, mk.Output())
	for _, want := range []string{"NOT FOR PRODUCTION", "listening", "redis     embedded", "identity  embedded", "engine    embedded", "dev token for"} {
		if !strings.Contains(mk.Output(), want) {
			t.Errorf("banner lacks %q", want)
		}
	}

	body := runPrintedRequest(t, curlLine)
	if !strings.Contains(body, "User ensured in Engine and DBStorage") {
		t.Fatalf("the printed request answered %q", body)
	}

	// A second token from the running instance's key.
	url := regexp.MustCompile(`http://127\.0\.0\.1:\d+`).FindString(curlLine)
	tokCmd := exec.Command("go", "run", "./cmd/ensure-user", "dev", "token", "--user-id", "alice", "--email", "alice@example.com", "--ttl", "5m")
	tokCmd.Dir = root
	for k, v := range env {
		tokCmd.Env = append(tokCmd.Env, k+"="+v)
	}
	tokCmd.Env = append(tokCmd.Env, "PATH="+os.Getenv("PATH"))
	tok, err := tokCmd.Output()
	if err != nil {
		t.Fatalf("dev token: %v", err)
	}
	req, _ := http.NewRequest(http.MethodPost, url+endpoint, nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, b := testenv.Do(t, http.DefaultClient, req)
	if resp.StatusCode != 200 || string(b) != bodyConfirmed {
		t.Fatalf("with the minted token: %d %s", resp.StatusCode, b)
	}

	mk.SignalGroup(syscall.SIGINT)
	if _, err := mk.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// The key file goes with the instance: no more tokens.
	again := exec.Command("go", "run", "./cmd/ensure-user", "dev", "token", "--user-id", "bob", "--email", "bob@example.com")
	again.Dir = root
	again.Env = tokCmd.Env
	if out, err := again.CombinedOutput(); err == nil || !strings.Contains(string(out), "no running") {
		t.Errorf("dev token after the instance stopped: %v %s", err, out)
	}
}

// runPrintedRequest runs the banner's curl line as a user would (with curl
// when the machine has it, else the same request from Go).
func runPrintedRequest(t *testing.T, line string) string {
	t.Helper()
	if _, err := exec.LookPath("curl"); err == nil {
		out, err := exec.Command("sh", "-c", line).Output()
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		return string(out)
	}
	url := regexp.MustCompile(`http://\S+`).FindString(line)
	auth := regexp.MustCompile(`'Authorization: ([^']+)'`).FindStringSubmatch(line)
	if url == "" || auth == nil {
		t.Fatalf("cannot read the printed request %q", line)
	}
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	req.Header.Set("Authorization", auth[1])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestDevRefusesANonLoopbackAddress: dev mode embeds a key anyone could
// mint tokens with, so it listens on loopback unless told otherwise.
func TestDevRefusesANonLoopbackAddress(t *testing.T) {
	t.Parallel()
	bin := testenv.BuildBinary(t, "./cmd/ensure-user")
	p := testenv.Start(t, bin, map[string]string{"HOME": t.TempDir(), "HTTP_ADDR": "0.0.0.0:0"}, "dev")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if code, err := p.Wait(ctx); err != nil || code != 2 || !strings.Contains(p.Output(), "--insecure-bind") {
		t.Fatalf("exit %d, %v:\n%s", code, err, p.Output())
	}
}

// TestDevUsesRealPartsWhenConfigured: each embedded part of dev mode is
// replaced by the real one just by setting its variable.
func TestDevUsesRealPartsWhenConfigured(t *testing.T) {
	t.Parallel()
	bin := testenv.BuildBinary(t, "./cmd/ensure-user")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("real Redis, embedded Engine", func(t *testing.T) {
		r := testenv.StartRedis(t)
		p := testenv.Start(t, bin, map[string]string{"HOME": t.TempDir(), "HTTP_ADDR": "127.0.0.1:0", "REDIS_URL": r.URL()}, "dev")
		waitBanner(ctx, t, p)
		if out := p.Output(); !strings.Contains(out, "redis     real: redis://127.0.0.1:") || !strings.Contains(out, "engine    embedded") {
			t.Fatalf("banner:\n%s", out)
		}
		line := bannerCurl(t, p.Output())
		if body := runPrintedRequest(t, line); body != bodyConfirmed {
			t.Fatalf("got %s", body)
		}
		if n, _ := r.MustDo(ctx, "XLEN", "engine:requests").AsInt64(); n != 1 {
			t.Errorf("the real Redis holds %d commands, want 1", n)
		}
		if ok, _ := r.MustDo(ctx, "SISMEMBER", "engine:requests:users", "dev-user-1").AsInt64(); ok != 1 {
			t.Error("the embedded Engine did not record the user in the real Redis")
		}
	})

	t.Run("real Redis, IdP and Engine", func(t *testing.T) {
		r := testenv.StartRedis(t)
		key := testenv.NewJWKSKey(t, "ES256", "real-1")
		idp := testenv.NewJWKSServer(t, key)
		p := testenv.Start(t, bin, map[string]string{
			"HOME": t.TempDir(), "HTTP_ADDR": "127.0.0.1:0", "REDIS_URL": r.URL(), "ENGINE_EMBEDDED": "false",
			"JWKS_URL": idp.URL + "/jwks.json", "JWT_ISSUER": issuer, "JWT_AUDIENCE": audience,
			"ENGINE_REPLY_TIMEOUT": "500ms",
		}, "dev")
		url := waitBanner(ctx, t, p)
		out := p.Output()
		for _, want := range []string{"redis     real", "identity  real: " + idp.URL, "engine    real"} {
			if !strings.Contains(out, want) {
				t.Errorf("banner lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "dev token") {
			t.Error("a banner without the embedded key offers a dev token")
		}
		claims := testenv.TokenClaims(time.Now(), issuer, audience)
		claims["sub"], claims["email"] = "real-user", "real@example.com"
		req, _ := http.NewRequest(http.MethodPost, url+endpoint, nil)
		req.Header.Set("Authorization", "Bearer "+key.MintToken(t, claims))
		resp, body := testenv.Do(t, http.DefaultClient, req)
		if resp.StatusCode != 202 || string(body) != bodyInitiated {
			t.Fatalf("no Engine runs: got %d %s, want 202", resp.StatusCode, body)
		}
		if n, _ := r.MustDo(ctx, "XLEN", "engine:requests").AsInt64(); n != 1 {
			t.Errorf("the real Redis holds %d commands, want 1", n)
		}
	})
}

// waitBanner waits for the dev banner and returns the service's URL.
func waitBanner(ctx context.Context, t *testing.T, p *testenv.Process) string {
	t.Helper()
	var url string
	err := p.WaitOutput(ctx, func(out string, _ []map[string]any) bool {
		m := regexp.MustCompile(`listening (http://127\.0\.0\.1:\d+)`).FindStringSubmatch(out)
		if m != nil && strings.Contains(out, "  engine ") {
			url = m[1]
			return true
		}
		return false
	})
	if err != nil {
		t.Fatalf("no banner: %v\n%s", err, p.Output())
	}
	return url
}

func bannerCurl(t *testing.T, out string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "curl ") {
			return l
		}
	}
	t.Fatalf("no curl line in:\n%s", out)
	return ""
}
