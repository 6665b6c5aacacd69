package correlate_test

import (
	"testing"

	"github.com/ensure-user/ensure-user/adapters/internal/correlate"
	"github.com/ensure-user/ensure-user/domain"
)

// BenchmarkDispatch is the correlation alone: registering a waiter, the map
// lookup and the channel send. redisbus' BenchmarkDispatch adds decoding and
// metrics.
func BenchmarkDispatch(b *testing.B) {
	tab := correlate.NewTable(0)
	r := domain.Reply{RequestID: "0b5c7f4e-3a1d-4c2b-9e8f-1a2b3c4d5e6f", Message: "user-1", Status: "ok"}
	b.ReportAllocs()
	for b.Loop() {
		ch, _ := tab.Register(r.RequestID)
		tab.Deliver(r, nil)
		<-ch
	}
}
