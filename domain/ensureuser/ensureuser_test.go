package ensureuser_test

import (
	"context"
	"errors"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/domain/ensureuser"
	"github.com/ensure-user/ensure-user/test/fake"
)

var alice = domain.Identity{UserID: "user-1", Email: "alice@example.com"}

// step is what the test's Engine does once the command is out.
type step int

const (
	reply   step = iota // deliver the case's reply
	timeout             // advance the fake clock past the reply timeout
	hangUp              // cancel the caller's context
)

func TestExecute(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		token      string
		verdict    error           // fake verifier refuses with this
		identity   domain.Identity // or accepts with this
		sendErr    error
		notRecv    bool // the bus is not receiving when the wait times out
		step       step
		reply      domain.Reply
		want       domain.Outcome
		wantErr    error
		wantSent   bool
		wantCmd    bool // a command reached the bus
		wantGiveUp bool // Abandon was called
	}{
		{name: "no token", token: "", wantErr: domain.ErrNoToken},
		{name: "invalid token", token: "t", verdict: domain.ErrInvalidToken, wantErr: domain.ErrInvalidToken},
		{name: "verifier unavailable", token: "t", verdict: domain.ErrVerifierUnavailable, wantErr: domain.ErrVerifierUnavailable},
		{name: "claims of the wrong shape", token: "t", verdict: domain.ErrInvalidPayload, wantErr: domain.ErrInvalidPayload},
		{name: "empty user id", token: "t", identity: domain.Identity{Email: "a@b.c"}, wantErr: domain.ErrInvalidPayload},
		{name: "300-byte user id", token: "t", identity: domain.Identity{UserID: strings.Repeat("u", 300), Email: "a@b.c"}, wantErr: domain.ErrInvalidPayload},
		{name: "user id with NUL", token: "t", identity: domain.Identity{UserID: "u\x00", Email: "a@b.c"}, wantErr: domain.ErrInvalidPayload},
		{name: "email with CRLF", token: "t", identity: domain.Identity{UserID: "u", Email: "a@b.c\r\nBcc: x@y.z"}, wantErr: domain.ErrInvalidPayload},
		{name: "email without @", token: "t", identity: domain.Identity{UserID: "u", Email: "alice"}, wantErr: domain.ErrInvalidPayload},
		{name: "status ok", token: "t", identity: alice, reply: domain.Reply{Status: "ok", Message: "user-1"}, want: domain.Confirmed, wantSent: true, wantCmd: true},
		{name: "status exists", token: "t", identity: alice, reply: domain.Reply{Status: "exists", Message: domain.LegacyAlreadyExists}, want: domain.Confirmed, wantSent: true, wantCmd: true},
		{name: "legacy new user", token: "t", identity: alice, reply: domain.Reply{Message: "user-1"}, want: domain.Confirmed, wantSent: true, wantCmd: true},
		{name: "legacy existing user", token: "t", identity: alice, reply: domain.Reply{Message: "user Already Exist"}, want: domain.Confirmed, wantSent: true, wantCmd: true},
		{name: "legacy other message", token: "t", identity: alice, reply: domain.Reply{Message: "queued"}, want: domain.Initiated, wantSent: true, wantCmd: true},
		{name: "legacy message for another user", token: "t", identity: alice, reply: domain.Reply{Message: "user-2"}, want: domain.Initiated, wantSent: true, wantCmd: true},
		{name: "status pending", token: "t", identity: alice, reply: domain.Reply{Status: "pending", Message: "user-1"}, want: domain.Initiated, wantSent: true, wantCmd: true},
		{name: "status error", token: "t", identity: alice, reply: domain.Reply{Status: "error", Message: "db down"}, wantErr: domain.ErrEngineFailed, wantSent: true, wantCmd: true},
		{name: "no reply in time", token: "t", identity: alice, step: timeout, want: domain.Initiated, wantSent: true, wantCmd: true, wantGiveUp: true},
		{name: "no reply while not receiving", token: "t", identity: alice, step: timeout, notRecv: true, wantErr: domain.ErrReplyLost, wantSent: true, wantCmd: true, wantGiveUp: true},
		{name: "not sent", token: "t", identity: alice, sendErr: domain.ErrBusUnavailable, wantErr: domain.ErrBusUnavailable},
		{name: "send outcome unknown", token: "t", identity: alice, sendErr: domain.ErrSendUnknown, wantErr: domain.ErrSendUnknown, wantSent: true},
		{name: "client hangs up while waiting", token: "t", identity: alice, step: hangUp, wantErr: context.Canceled, wantSent: true, wantCmd: true, wantGiveUp: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := fake.NewClock()
			bus := fake.NewBus(1)
			bus.FailSends(tt.sendErr)
			bus.SetReceiving(!tt.notRecv)
			v := &fake.Verifier{}
			if tt.verdict != nil {
				v.Refuse(tt.token, tt.verdict)
			} else {
				v.Accept(tt.token, tt.identity)
			}
			uc := ensureuser.New(ensureuser.Config{ReplyTimeout: 5 * time.Second}, v, bus, clock)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			type result struct {
				res ensureuser.Result
				err error
			}
			done := make(chan result, 1)
			go func() {
				res, err := uc.Execute(ctx, ensureuser.Input{Token: tt.token})
				done <- result{res, err}
			}()

			var got result
			select {
			case got = <-done:
				if tt.wantCmd {
					t.Fatalf("returned before sending: %+v, %v", got.res, got.err)
				}
			case cmd := <-bus.Sent:
				if !tt.wantCmd {
					t.Fatalf("sent %+v, want nothing sent", cmd)
				}
				switch tt.step {
				case reply:
					r := tt.reply
					r.RequestID = cmd.RequestID
					if !bus.Reply(r) {
						t.Fatal("nobody was waiting for the reply")
					}
				case timeout:
					if err := clock.BlockUntilContext(ctx, 1); err != nil {
						t.Fatal(err)
					}
					clock.Advance(5 * time.Second)
				case hangUp:
					cancel()
				}
				got = <-done
			}

			if tt.wantErr != nil {
				if !errors.Is(got.err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", got.err, tt.wantErr)
				}
			} else if got.err != nil || got.res.Outcome != tt.want {
				t.Fatalf("got %v, %v; want %v", got.res.Outcome, got.err, tt.want)
			}
			if got.res.Sent != tt.wantSent {
				t.Errorf("Sent = %v, want %v", got.res.Sent, tt.wantSent)
			}
			if gaveUp := len(bus.Abandoned()) > 0; gaveUp != tt.wantGiveUp {
				t.Errorf("abandoned = %v, want %v", bus.Abandoned(), tt.wantGiveUp)
			}
			if uc.Waiting() != 0 {
				t.Errorf("Waiting() = %d after return, want 0", uc.Waiting())
			}
		})
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestExecuteBuildsTheCommand(t *testing.T) {
	t.Parallel()
	clock := fake.NewClock()
	bus := fake.NewBus(1)
	id := domain.Identity{UserID: `id "quoted" \ ünïcode`, Email: "o'brien+tag@example.co.uk"}
	v := (&fake.Verifier{}).Accept("tok", id)
	uc := ensureuser.New(ensureuser.Config{}, v, bus, clock)
	trace := domain.Trace{Parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", State: "congo=t61rcWkgMzE"}

	done := make(chan ensureuser.Result, 1)
	go func() {
		res, _ := uc.Execute(context.Background(), ensureuser.Input{Token: "tok", Trace: trace})
		done <- res
	}()
	cmd := <-bus.Sent
	if cmd.User.ID != id.UserID || cmd.User.Email != id.Email {
		t.Errorf("user = %+v, want exactly %+v", cmd.User, id)
	}
	if !uuidV4.MatchString(cmd.RequestID) {
		t.Errorf("request id %q is not a UUID v4", cmd.RequestID)
	}
	if !cmd.SentAt.Equal(clock.Now()) {
		t.Errorf("SentAt = %v, want the clock's %v", cmd.SentAt, clock.Now())
	}
	if cmd.Trace != trace {
		t.Errorf("trace = %+v, want %+v", cmd.Trace, trace)
	}
	bus.Reply(domain.Reply{RequestID: cmd.RequestID, Status: "ok"})
	res := <-done
	if res.RequestID != cmd.RequestID || res.UserID != id.UserID {
		t.Errorf("result = %+v, want request id %s and user %s", res, cmd.RequestID, id.UserID)
	}
}

func TestExecuteRefusesBeyondMaxWaiting(t *testing.T) {
	t.Parallel()
	clock := fake.NewClock()
	bus := fake.NewBus(3)
	v := (&fake.Verifier{}).Accept("tok", alice)
	uc := ensureuser.New(ensureuser.Config{MaxWaiting: 2}, v, bus, clock)

	done := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := uc.Execute(context.Background(), ensureuser.Input{Token: "tok"})
			done <- err
		}()
	}
	first, second := <-bus.Sent, <-bus.Sent
	if n := uc.Waiting(); n != 2 {
		t.Fatalf("Waiting() = %d, want 2", n)
	}
	if _, err := uc.Execute(context.Background(), ensureuser.Input{Token: "tok"}); !errors.Is(err, domain.ErrBusy) {
		t.Fatalf("third request: err = %v, want ErrBusy", err)
	}
	select {
	case cmd := <-bus.Sent:
		t.Fatalf("busy request was sent: %+v", cmd)
	default:
	}
	bus.Reply(domain.Reply{RequestID: first.RequestID, Status: "ok"})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A slot is free again.
	go func() {
		_, err := uc.Execute(context.Background(), ensureuser.Input{Token: "tok"})
		done <- err
	}()
	third := <-bus.Sent
	bus.Reply(domain.Reply{RequestID: second.RequestID, Status: "ok"})
	bus.Reply(domain.Reply{RequestID: third.RequestID, Status: "ok"})
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func TestExecuteTakesAReplyThatRacesTheTimeout(t *testing.T) {
	t.Parallel()
	clock := fake.NewClock()
	bus := fake.NewBus(1)
	v := (&fake.Verifier{}).Accept("tok", alice)
	uc := ensureuser.New(ensureuser.Config{ReplyTimeout: time.Second}, v, bus, clock)
	bus.SetReceiving(false) // were the reply not taken, this would be a 502

	done := make(chan error, 1)
	var res ensureuser.Result
	go func() {
		var err error
		res, err = uc.Execute(context.Background(), ensureuser.Input{Token: "tok"})
		done <- err
	}()
	cmd := <-bus.Sent
	// Deliver into the buffered channel without waking the waiter first,
	// then fire the timer: whichever the select sees, the reply wins.
	bus.Reply(domain.Reply{RequestID: cmd.RequestID, Status: "ok"})
	clock.Advance(time.Second)
	if err := <-done; err != nil || res.Outcome != domain.Confirmed {
		t.Fatalf("got %v, %v; want confirmed", res.Outcome, err)
	}
}

// waitWaiting waits until n requests are waiting in uc. There is no event
// for "a goroutine reached the select", so this polls the counter.
func waitWaiting(t *testing.T, uc *ensureuser.UseCase, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for uc.Waiting() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d requests waiting", uc.Waiting(), n)
		}
		runtime.Gosched()
	}
}

func TestCoalescingSharesOneCommand(t *testing.T) {
	t.Parallel()
	const n = 100
	clock := fake.NewClock()
	bus := fake.NewBus(n)
	v := (&fake.Verifier{}).Accept("tok", alice)
	uc := ensureuser.New(ensureuser.Config{Coalesce: true}, v, bus, clock)

	type result struct {
		res ensureuser.Result
		err error
	}
	done := make(chan result, n)
	for range n {
		go func() {
			res, err := uc.Execute(context.Background(), ensureuser.Input{Token: "tok"})
			done <- result{res, err}
		}()
	}
	cmd := <-bus.Sent
	waitWaiting(t, uc, n)
	bus.Reply(domain.Reply{RequestID: cmd.RequestID, Status: "exists", Message: domain.LegacyAlreadyExists})
	joined := 0
	for range n {
		r := <-done
		if r.err != nil || r.res.Outcome != domain.Confirmed || r.res.RequestID != cmd.RequestID {
			t.Fatalf("got %+v, %v; want confirmed by the shared command", r.res, r.err)
		}
		if r.res.Coalesced {
			joined++
		}
	}
	if joined != n-1 {
		t.Errorf("%d requests joined, want %d", joined, n-1)
	}
	select {
	case extra := <-bus.Sent:
		t.Fatalf("a second command was sent: %+v", extra)
	default:
	}
	// The flight is over: the next request sends its own command.
	go func() {
		res, err := uc.Execute(context.Background(), ensureuser.Input{Token: "tok"})
		done <- result{res, err}
	}()
	next := <-bus.Sent
	if next.RequestID == cmd.RequestID {
		t.Fatal("the finished flight's command was reused")
	}
	bus.Reply(domain.Reply{RequestID: next.RequestID, Status: "ok"})
	if r := <-done; r.err != nil || r.res.Coalesced {
		t.Fatalf("got %+v, %v", r.res, r.err)
	}
}

func TestCoalescingSurvivesTheLeaderHangingUp(t *testing.T) {
	t.Parallel()
	clock := fake.NewClock()
	bus := fake.NewBus(2)
	v := (&fake.Verifier{}).Accept("tok", alice)
	uc := ensureuser.New(ensureuser.Config{Coalesce: true}, v, bus, clock)

	leaderCtx, hangUp := context.WithCancel(context.Background())
	leader := make(chan error, 1)
	go func() {
		_, err := uc.Execute(leaderCtx, ensureuser.Input{Token: "tok"})
		leader <- err
	}()
	cmd := <-bus.Sent
	follower := make(chan error, 1)
	var res ensureuser.Result
	go func() {
		var err error
		res, err = uc.Execute(context.Background(), ensureuser.Input{Token: "tok"})
		follower <- err
	}()
	waitWaiting(t, uc, 2)
	hangUp()
	if err := <-leader; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader: %v, want context.Canceled", err)
	}
	bus.Reply(domain.Reply{RequestID: cmd.RequestID, Status: "ok"})
	if err := <-follower; err != nil || res.Outcome != domain.Confirmed {
		t.Fatalf("follower: %+v, %v", res, err)
	}
}

func TestWithoutCoalescingEveryCallSends(t *testing.T) {
	t.Parallel()
	const n = 20
	bus := fake.NewBus(n)
	v := (&fake.Verifier{}).Accept("tok", alice)
	uc := ensureuser.New(ensureuser.Config{}, v, bus, fake.NewClock())
	done := make(chan error, n)
	for range n {
		go func() {
			_, err := uc.Execute(context.Background(), ensureuser.Input{Token: "tok"})
			done <- err
		}()
	}
	seen := map[string]bool{}
	for range n {
		cmd := <-bus.Sent
		seen[cmd.RequestID] = true
		bus.Reply(domain.Reply{RequestID: cmd.RequestID, Status: "ok"})
	}
	for range n {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != n {
		t.Fatalf("%d distinct commands for %d calls", len(seen), n)
	}
}
