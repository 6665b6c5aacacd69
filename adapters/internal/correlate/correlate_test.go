package correlate_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ensure-user/ensure-user/adapters/internal/correlate"
	"github.com/ensure-user/ensure-user/domain"
)

func TestDeliverToItsWaiterOnly(t *testing.T) {
	t.Parallel()
	tab := correlate.NewTable(0)
	a, err := tab.Register("a")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := tab.Register("b")
	if _, err := tab.Register("a"); !errors.Is(err, correlate.ErrDuplicate) {
		t.Fatalf("second Register(a) = %v, want ErrDuplicate", err)
	}
	if res, _ := tab.Deliver(domain.Reply{RequestID: "b", Message: "for b"}, nil); res != correlate.Delivered {
		t.Fatalf("Deliver(b) = %v", res)
	}
	if got := <-b; got.Message != "for b" {
		t.Errorf("b got %+v", got)
	}
	select {
	case r := <-a:
		t.Fatalf("a got b's reply %+v", r)
	default:
	}
	if tab.Len() != 1 {
		t.Errorf("Len = %d, want 1", tab.Len())
	}
}

func TestResults(t *testing.T) {
	t.Parallel()
	tab := correlate.NewTable(2)
	ch, _ := tab.Register("answered")
	tab.Deliver(domain.Reply{RequestID: "answered"}, nil)
	<-ch
	tab.Register("abandoned")
	tab.Abandon("abandoned")
	tab.Abandon("abandoned") // harmless
	tab.Register("failed")
	tab.Forget("failed")

	tests := []struct {
		id   string
		want correlate.Result
	}{
		{"answered", correlate.Late}, // duplicate
		{"abandoned", correlate.Late},
		{"failed", correlate.Unknown}, // never sent, so not ours
		{"stranger", correlate.Unknown},
	}
	for _, tt := range tests {
		if got, _ := tab.Deliver(domain.Reply{RequestID: tt.id}, nil); got != tt.want {
			t.Errorf("Deliver(%s) = %v, want %v", tt.id, got, tt.want)
		}
	}
	if tab.Len() != 0 {
		t.Errorf("Len = %d, want 0", tab.Len())
	}
}

// TestMemoryIsBounded checks that the table forgets the oldest abandoned ids.
func TestMemoryIsBounded(t *testing.T) {
	t.Parallel()
	tab := correlate.NewTable(3)
	for i := range 5 {
		id := fmt.Sprint(i)
		tab.Register(id)
		tab.Abandon(id)
	}
	for i, want := range []correlate.Result{correlate.Unknown, correlate.Unknown, correlate.Late, correlate.Late, correlate.Late} {
		if got, _ := tab.Deliver(domain.Reply{RequestID: fmt.Sprint(i)}, nil); got != want {
			t.Errorf("Deliver(%d) = %v, want %v", i, got, want)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	tab := correlate.NewTable(0)
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			id := fmt.Sprint(i)
			ch, err := tab.Register(id)
			if err != nil {
				t.Error(err)
				return
			}
			if i%2 == 0 {
				tab.Abandon(id)
			}
			tab.Deliver(domain.Reply{RequestID: id, Message: id}, nil)
			if i%2 == 1 {
				if r := <-ch; r.Message != id {
					t.Errorf("%s got %+v", id, r)
				}
			}
		})
	}
	wg.Wait()
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := correlate.NewMetrics(reg, func() int { return 7 }, func() bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	m.Sent()
	m.NotSent()
	m.Reply(correlate.Malformed, 0)
	m.Reply(correlate.Delivered, 0)
	want := `
# HELP ensure_user_engine_replies_total Engine reply entries read, by what became of them.
# TYPE ensure_user_engine_replies_total counter
ensure_user_engine_replies_total{result="delivered"} 1
ensure_user_engine_replies_total{result="late"} 0
ensure_user_engine_replies_total{result="malformed"} 1
ensure_user_engine_replies_total{result="unknown"} 0
# HELP ensure_user_engine_waiting Requests waiting for an Engine reply.
# TYPE ensure_user_engine_waiting gauge
ensure_user_engine_waiting 7
# HELP ensure_user_engine_reader_connected 1 while the reply reader is receiving replies, else 0.
# TYPE ensure_user_engine_reader_connected gauge
ensure_user_engine_reader_connected 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"ensure_user_engine_replies_total", "ensure_user_engine_waiting", "ensure_user_engine_reader_connected"); err != nil {
		t.Error(err)
	}
	if n, _ := testutil.GatherAndCount(reg, "ensure_user_engine_send_errors_total"); n != 2 {
		t.Errorf("send error series = %d, want 2 (both kinds pre-created)", n)
	}
	if _, err := correlate.NewMetrics(reg, func() int { return 0 }, func() bool { return false }); err == nil {
		t.Error("registering twice on one registry succeeded")
	}
}

// TestDeliverCountsBeforeHandingOver: count sees each result, and a
// delivered reply is counted before its waiter can receive it, so a request
// that has its answer finds it in the metrics.
func TestDeliverCountsBeforeHandingOver(t *testing.T) {
	t.Parallel()
	tab := correlate.NewTable(0)
	ch, err := tab.Register("a")
	if err != nil {
		t.Fatal(err)
	}
	var counted []correlate.Result
	count := func(r correlate.Result, _ time.Duration) {
		if r == correlate.Delivered && len(ch) != 0 {
			t.Error("the reply reached its waiter before it was counted")
		}
		counted = append(counted, r)
	}
	tab.Deliver(domain.Reply{RequestID: "a"}, count)
	tab.Deliver(domain.Reply{RequestID: "a"}, count)     // a duplicate: late
	tab.Deliver(domain.Reply{RequestID: "other"}, count) // nobody's: unknown
	want := []correlate.Result{correlate.Delivered, correlate.Late, correlate.Unknown}
	if fmt.Sprint(counted) != fmt.Sprint(want) {
		t.Errorf("counted %v, want %v", counted, want)
	}
	if r := <-ch; r.RequestID != "a" {
		t.Errorf("waiter got %+v", r)
	}
}
