package redisbus

import (
	"context"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/adapters/internal/correlate"
	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/test/testenv"
)

func benchCommand() domain.Command {
	return domain.Command{
		RequestID: "0b5c7f4e-3a1d-4c2b-9e8f-1a2b3c4d5e6f",
		User:      domain.User{ID: "user-1234567890", Email: "someone@example.com"},
		SentAt:    time.Date(2026, 1, 2, 3, 4, 5, 600700800, time.UTC),
		Trace:     domain.Trace{Parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	}
}

// BenchmarkEncodeXadd is the request encoding as Send does it: the protocol
// JSON (see also protocol's BenchmarkEncodeCommand) and the XADD built
// around it, without I/O.
func BenchmarkEncodeXadd(b *testing.B) {
	client, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress: []string{"127.0.0.1:1"}, ForceSingleClient: true, DisableCache: true,
	})
	if client == nil {
		b.Fatal(err)
	}
	defer client.Close()
	cmd := benchCommand()
	b.ReportAllocs()
	for b.Loop() {
		payload := protocol.EncodeCommand(cmd, "engine:replies")
		c := client.B().Xadd().Key("engine:requests").Maxlen().Almost().Threshold("1000000").
			Id("*").FieldValue().FieldValue(protocol.Field, rueidis.BinaryString(payload)).Build()
		_ = c
	}
}

// BenchmarkDispatch is what the reply reader does per entry: find the
// message field, decode it, look up the waiter, hand over the reply; plus
// the waiter's registration, which every delivered reply needs.
func BenchmarkDispatch(b *testing.B) {
	m, _ := correlate.NewMetrics(nil, func() int { return 0 }, func() bool { return true })
	bus := &Bus{log: zap.NewNop(), table: correlate.NewTable(0), metrics: m}
	cmd := benchCommand()
	entry := rueidis.XRangeSlice{ID: "1-1", FieldValues: []rueidis.XRangeFieldValue{{
		Field: protocol.Field,
		Value: string(protocol.EncodeReply(protocol.Reply{Function: "createUser", RequestID: cmd.RequestID, Message: cmd.User.ID, Status: "ok"})),
	}}}
	b.ReportAllocs()
	for b.Loop() {
		replies, _ := bus.table.Register(cmd.RequestID)
		bus.dispatch(entry)
		<-replies
	}
}

// BenchmarkRoundTrip is Send to reply through a real redis-server and a
// batching test Engine, at the benchmark's parallelism (-cpu, SetParallelism).
func BenchmarkRoundTrip(b *testing.B) {
	r := testenv.StartRedis(b)
	f := newFixture(b, r)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	engineDone := make(chan int64)
	go func() { engineDone <- runBatchingEngine(ctx, f, done) }()
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			cmd := benchCommand()
			cmd.RequestID = domain.NewRequestID()
			replies, err := f.bus.Send(ctx, cmd)
			if err != nil {
				b.Error(err)
				return
			}
			<-replies
		}
	})
	b.StopTimer()
	close(done)
	<-engineDone
}
