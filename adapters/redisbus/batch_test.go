package redisbus

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// TestBatcherGroupsAWindow: sends within one window go in one DoMulti, each
// gets its own result, and a full batch goes at once.
func TestBatcherGroupsAWindow(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		batches [][]rueidis.Completed
	)
	refused := errors.New("refused")
	b := &batcher{
		window: 50 * time.Millisecond,
		bound:  newDeadlines(time.Second, time.Millisecond),
		do: func(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
			if _, ok := ctx.Deadline(); !ok {
				t.Error("a batch without a deadline")
			}
			mu.Lock()
			batches = append(batches, cmds)
			mu.Unlock()
			out := make([]rueidis.RedisResult, len(cmds))
			for i, c := range cmds {
				out[i] = rueidis.NewErrorResult(nil) // a reply without an error
				if c.Commands()[1] == "bad" {
					out[i] = rueidis.NewErrorResult(refused)
				}
			}
			return out
		},
	}
	builder := dial(t, "redis://127.0.0.1:1/0").B() // only builds commands: never connects
	cmd := func(key string) rueidis.Completed {
		return builder.Xadd().Key(key).Id("*").FieldValue().FieldValue("f", "v").Build()
	}
	const n = 10
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		key := "good"
		if i == 3 {
			key = "bad"
		}
		wg.Go(func() { _, err := b.send(cmd(key)); errs <- err })
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			if !errors.Is(err, refused) {
				t.Errorf("unexpected error %v", err)
			}
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d sends failed, want exactly the refused one", failed)
	}
	total := 0
	for _, c := range batches {
		total += len(c)
	}
	if total != n || len(batches) >= n {
		t.Errorf("%d commands in %d batches, want %d in fewer batches", total, len(batches), n)
	}

	// A full batch does not wait for its window.
	b.window = time.Hour
	batches = nil
	start := time.Now()
	for range batchMax {
		wg.Go(func() {
			if _, err := b.send(cmd("good")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if len(batches) != 1 || len(batches[0]) != batchMax {
		t.Errorf("batches %d, want one of %d", len(batches), batchMax)
	}
	if time.Since(start) > time.Minute {
		t.Error("a full batch waited for its window")
	}
}
