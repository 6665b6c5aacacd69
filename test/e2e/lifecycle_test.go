package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/test/testenv"
)

// TestGracefulDrainOnSIGTERM sends SIGTERM to the real binary in the middle
// of a burst whose Engine replies are delayed: readiness turns 503 at once,
// and every in-flight request still gets its normal answer.
func TestGracefulDrainOnSIGTERM(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{engineDelay: 1500 * time.Millisecond, env: map[string]string{
		"ENGINE_REPLY_TIMEOUT": "5s", "SHUTDOWN_DELAY": "700ms", "SHUTDOWN_TIMEOUT": "10s",
	}})
	const n = 50
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	results := make(chan string, n)
	var wg sync.WaitGroup
	for i := range n {
		id := fmt.Sprintf("ok-drain-%d", i)
		tok := s.token(id, id+"@example.com")
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, s.svc.URL+endpoint, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			if err != nil {
				results <- "error: " + err.Error()
				return
			}
			defer resp.Body.Close()
			results <- resp.Status
		})
	}
	if err := s.engine.AwaitTotal(ctx, n); err != nil { // every request is in flight, its reply delayed
		t.Fatalf("only %d of %d commands reached the Engine", s.engine.Total(), n)
	}
	s.svc.Signal(syscall.SIGTERM)
	if err := testenv.WaitHTTP(ctx, s.svc.URL+"/readyz", http.StatusServiceUnavailable); err != nil {
		t.Fatalf("readiness did not turn 503 during the shutdown delay: %v", err)
	}
	wg.Wait()
	close(results)
	for r := range results {
		if r != "200 OK" {
			t.Errorf("in-flight request got %q, want 200 OK", r)
		}
	}
	code, err := s.svc.Wait(ctx)
	if err != nil || code != 0 {
		t.Fatalf("exit code %d, %v; want 0", code, err)
	}
	if _, err := s.svc.WaitLog(ctx, "drained: every in-flight request has its answer"); err != nil {
		t.Error(err)
	}
}

// TestBadConfigurationExitsWithStatus2 names the variable and exits 2.
func TestBadConfigurationExitsWithStatus2(t *testing.T) {
	t.Parallel()
	bin := testenv.BuildBinary(t, "./cmd/ensure-user")
	p := testenv.Start(t, bin, map[string]string{"JWKS_URL": "https://idp.example.com/jwks", "JWT_ISSUER": "i",
		"JWT_AUDIENCE": "a", "ENGINE_REPLY_TIMEOUT": "soon"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, err := p.Wait(ctx)
	if err != nil || code != 2 {
		t.Fatalf("exit %d, %v; want 2", code, err)
	}
	if out := p.Output(); !strings.Contains(out, "ENGINE_REPLY_TIMEOUT") {
		t.Errorf("output does not name the variable:\n%s", out)
	}
	p2 := testenv.Start(t, bin, nil) // serve with nothing set: JWKS_URL or a secret is required
	if code, _ := p2.Wait(ctx); code != 2 {
		t.Errorf("serve without an identity provider: exit %d, want 2\n%s", code, p2.Output())
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	p := testenv.Start(t, testenv.BuildBinary(t, "./cmd/ensure-user"), nil, "version")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if code, err := p.Wait(ctx); err != nil || code != 0 || !strings.Contains(p.Output(), "ensure-user ") || !strings.Contains(p.Output(), "go1.") {
		t.Fatalf("version: exit %d, %v, output %q", code, err, p.Output())
	}
}
