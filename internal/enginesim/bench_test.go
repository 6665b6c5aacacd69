package enginesim

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
)

// BenchmarkThroughput measures the commands one runner answers per second
// against a local redis-server, from the first command read to the last
// reply in the reply stream:
//   - backlog: b.N commands wait in the request stream when it starts;
//   - live: a producer writes them while it runs (sharing the CPU with it);
//   - delayed: backlog, each reply delayed uniformly by 1 to 50 ms.
//
// Run it with a fixed count, e.g. -bench Throughput -benchtime 200000x.
func BenchmarkThroughput(b *testing.B) {
	for _, mode := range []struct {
		name        string
		live        bool
		delay, upto time.Duration
	}{
		{name: "backlog"},
		{name: "live", live: true},
		{name: "delayed", delay: time.Millisecond, upto: 50 * time.Millisecond},
	} {
		b.Run(mode.name, func(b *testing.B) {
			live := mode.live
			srv := realRedis(b)
			cfg := testConfig(b)
			cfg.ReplyMaxLen = int64(2 * b.N) // the clock stops on the reply count: no trimming
			cfg.ReplyDelay, cfg.ReplyDelayMax = mode.delay, mode.upto
			payloads := make([]string, b.N)
			for i := range payloads {
				cmd := domain.Command{
					RequestID: domain.NewRequestID(),
					User:      domain.User{ID: fmt.Sprintf("user-%d", i), Email: "user@example.com"},
					SentAt:    time.Now(),
				}
				payloads[i] = string(protocol.EncodeCommand(cmd, ""))
			}
			produced := make(chan error, 1)
			if !live {
				produced <- produce(srv.raw, cfg.RequestStream, payloads)
			}
			e := newEngine(b, srv, cfg)

			b.ResetTimer()
			start := time.Now()
			e.start()
			if live {
				go func() { produced <- produce(srv.raw, cfg.RequestStream, payloads) }()
			}
			if err := <-produced; err != nil {
				b.Fatal(err)
			}
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for srv.length(cfg.ReplyStream) < b.N {
				<-tick.C
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commands/s")
		})
	}
}

// produce XADDs payloads to stream, 500 per round trip.
func produce(c rueidis.Client, stream string, payloads []string) error {
	for len(payloads) > 0 {
		n := min(500, len(payloads))
		cmds := make(rueidis.Commands, n)
		for i, p := range payloads[:n] {
			cmds[i] = c.B().Xadd().Key(stream).Id("*").FieldValue().FieldValue(protocol.Field, p).Build()
		}
		for _, res := range c.DoMulti(context.Background(), cmds...) {
			if err := res.Error(); err != nil {
				return fmt.Errorf("xadd: %w", err)
			}
		}
		payloads = payloads[n:]
	}
	return nil
}
