package fake_test

import (
	"context"
	"testing"

	"github.com/ensure-user/ensure-user/adapters/sysclock"
	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/ports"
	"github.com/ensure-user/ensure-user/test/contract"
	"github.com/ensure-user/ensure-user/test/fake"
)

// The fakes run the same contract suites as the real adapters, so a unit
// test that passes against a fake would pass against the real thing.

func TestClockContract(t *testing.T) {
	t.Parallel()
	t.Run("fake", func(t *testing.T) {
		c := fake.NewClock()
		contract.RunClock(t, contract.ClockHarness{Clock: c, Advance: c.Advance, Settle: c.BlockUntilContext})
	})
	t.Run("system", func(t *testing.T) {
		contract.RunClock(t, contract.ClockHarness{Clock: sysclock.New()})
	})
}

func TestBusContract(t *testing.T) {
	t.Parallel()
	contract.RunEngineBus(t, contract.EngineBusHarness{
		SkipStalling: "the fake bus publishes in memory: it never stalls",
		New: func(t *testing.T) (ports.EngineBus, contract.EngineSide) {
			b := fake.NewBus(100_000)
			return b, busEngine{b}
		},
		Unreachable: func(t *testing.T) ports.EngineBus {
			b := fake.NewBus(1)
			b.FailSends(domain.ErrBusUnavailable)
			return b
		},
	})
}

// busEngine is the Engine side of a fake.Bus: it sees the commands as the
// wire format would carry them and answers through Bus.Reply.
type busEngine struct{ b *fake.Bus }

func (e busEngine) Next(ctx context.Context) ([]byte, error) {
	select {
	case cmd := <-e.b.Sent:
		return protocol.EncodeCommand(cmd, "fake:replies"), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (e busEngine) Reply(_ context.Context, payload []byte) error {
	r, err := protocol.DecodeReply(payload)
	if err != nil {
		return nil // junk is skipped, as the real buses do
	}
	e.b.Reply(r)
	return nil
}
