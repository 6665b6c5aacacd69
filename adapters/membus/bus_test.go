package membus_test

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/adapters/membus"
	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/refengine"
	"github.com/ensure-user/ensure-user/ports"
	"github.com/ensure-user/ensure-user/test/contract"
	"github.com/ensure-user/ensure-user/test/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func engineConfig() membus.Config { return membus.Config{ReplyTo: "engine:replies"} }

func TestEngineBusContract(t *testing.T) {
	contract.RunEngineBus(t, contract.EngineBusHarness{
		SkipStalling: "an in-memory publish cannot stall: it is sent or refused at once",
		New: func(t *testing.T) (ports.EngineBus, contract.EngineSide) {
			bus, engine, cleanup, err := membus.NewManual(engineConfig(), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cleanup)
			return bus, engine
		},
		// The in-memory analogue of an unreachable server is a stopped bus.
		Unreachable: func(t *testing.T) ports.EngineBus {
			bus, cleanup, err := membus.New(engineConfig(), zap.NewNop(), nil)
			if err != nil {
				t.Fatal(err)
			}
			cleanup()
			return bus
		},
	})
}

func newBus(t *testing.T, opts membus.Options) (*membus.Bus, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	bus, cleanup, err := membus.NewWithOptions(engineConfig(), zap.NewNop(), reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	return bus, reg
}

func command(userID string) domain.Command {
	return domain.Command{RequestID: domain.NewRequestID(), User: domain.User{ID: userID, Email: "a@example.com"}, SentAt: time.Now()}
}

// TestReferenceEngineAnswers runs the default bus end to end: the in-process
// Engine confirms a new user, then says it exists.
func TestReferenceEngineAnswers(t *testing.T) {
	t.Parallel()
	bus, reg := newBus(t, membus.Options{})
	for _, want := range []domain.Reply{
		{Message: "user-1", Status: domain.StatusOK},
		{Message: domain.LegacyAlreadyExists, Status: domain.StatusExists},
	} {
		cmd := command("user-1")
		replies, err := bus.Send(t.Context(), cmd)
		if err != nil {
			t.Fatal(err)
		}
		want.RequestID = cmd.RequestID
		if got := <-replies; got != want {
			t.Errorf("reply %+v, want %+v", got, want)
		}
	}
	if err := bus.Ready(t.Context()); err != nil {
		t.Errorf("Ready = %v", err)
	}
	if got := testenv.Metric(t, reg, "ensure_user_engine_commands_sent_total"); got != 2 {
		t.Errorf("commands sent = %v, want 2", got)
	}
}

func TestLegacyEngine(t *testing.T) {
	t.Parallel()
	bus, _ := newBus(t, membus.Options{Engine: refengine.New(refengine.NewMemoryStore(), refengine.WithLegacy())})
	cmd := command("user-1")
	replies, err := bus.Send(t.Context(), cmd)
	if err != nil {
		t.Fatal(err)
	}
	if got := <-replies; got.Status != "" || got.Message != "user-1" {
		t.Errorf("legacy reply %+v", got)
	}
}

func TestReplyDelay(t *testing.T) {
	t.Parallel()
	const delay = 30 * time.Millisecond
	bus, _ := newBus(t, membus.Options{ReplyDelay: delay})
	start := time.Now()
	replies, err := bus.Send(t.Context(), command("user-1"))
	if err != nil {
		t.Fatal(err)
	}
	<-replies
	if elapsed := time.Since(start); elapsed < delay {
		t.Errorf("reply after %s, want at least %s", elapsed, delay)
	}
}

// TestMetricsCountReplies checks the reply counters with a manual Engine,
// whose replies are handled synchronously.
func TestMetricsCountReplies(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	bus, engine, cleanup, err := membus.NewManual(engineConfig(), reg)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	ctx := t.Context()
	a, b := command("a"), command("b")
	repliesA, _ := bus.Send(ctx, a)
	if _, err := bus.Send(ctx, b); err != nil {
		t.Fatal(err)
	}
	bus.Abandon(b.RequestID)
	for _, p := range []string{
		`{"requestId":"` + a.RequestID + `","message":"a","status":"ok"}`,
		`{"requestId":"` + a.RequestID + `","message":"a","status":"ok"}`, // duplicate: late
		`{"requestId":"` + b.RequestID + `","message":"b","status":"ok"}`, // abandoned: late
		`{"requestId":"someone-else","message":"x"}`,                      // unknown
		`junk`, // malformed
	} {
		if err := engine.Reply(ctx, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	<-repliesA
	for result, want := range map[string]float64{"delivered": 1, "late": 2, "unknown": 1, "malformed": 1} {
		if got := testenv.Metric(t, reg, "ensure_user_engine_replies_total", "result", result); got != want {
			t.Errorf("replies{result=%q} = %v, want %v", result, got, want)
		}
	}
	if got := testenv.Metric(t, reg, "ensure_user_engine_waiting"); got != 0 {
		t.Errorf("waiting = %v", got)
	}
	if got := testenv.Metric(t, reg, "ensure_user_engine_reader_connected"); got != 1 {
		t.Errorf("reader connected = %v, want 1 while open", got)
	}
}

func TestStoppedBus(t *testing.T) {
	t.Parallel()
	bus, cleanup, err := membus.New(engineConfig(), zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cleanup()
	cleanup() // twice is harmless
	if _, err := bus.Send(t.Context(), command("u")); !errors.Is(err, domain.ErrBusUnavailable) {
		t.Errorf("Send after cleanup = %v", err)
	}
	if !bus.Abandon("x") {
		t.Error("Abandon on a stopped bus must report replies may be lost")
	}
	if err := bus.Ready(t.Context()); !errors.Is(err, domain.ErrBusUnavailable) {
		t.Errorf("Ready after cleanup = %v", err)
	}
}

func TestDuplicateRequestID(t *testing.T) {
	t.Parallel()
	bus, _ := newBus(t, membus.Options{ReplyDelay: time.Hour})
	cmd := command("u")
	if _, err := bus.Send(t.Context(), cmd); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Send(t.Context(), cmd); !errors.Is(err, domain.ErrBusUnavailable) {
		t.Errorf("second Send of one id = %v, want ErrBusUnavailable", err)
	}
}
