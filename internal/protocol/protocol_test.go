package protocol_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
)

func command() domain.Command {
	return domain.Command{
		RequestID: "0b5c7f4e-3a1d-4c2b-9e8f-1a2b3c4d5e6f",
		User:      domain.User{ID: "user-1", Email: "a@example.com"},
		SentAt:    time.Date(2026, 1, 2, 3, 4, 5, 600700800, time.UTC),
	}
}

func TestEncodeCommand(t *testing.T) {
	t.Parallel()
	withTrace := command()
	withTrace.Trace = domain.Trace{Parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", State: "k=v"}
	tests := []struct {
		name string
		cmd  domain.Command
		want string
	}{
		{
			name: "without trace",
			cmd:  command(),
			want: `{"function":"createUser","requestId":"0b5c7f4e-3a1d-4c2b-9e8f-1a2b3c4d5e6f",` +
				`"userId":"user-1","userEmail":"a@example.com","replyTo":"engine:replies",` +
				`"sentAt":"2026-01-02T03:04:05.6007008Z"}`,
		},
		{
			name: "with trace",
			cmd:  withTrace,
			want: `{"function":"createUser","requestId":"0b5c7f4e-3a1d-4c2b-9e8f-1a2b3c4d5e6f",` +
				`"userId":"user-1","userEmail":"a@example.com","replyTo":"engine:replies",` +
				`"sentAt":"2026-01-02T03:04:05.6007008Z",` +
				`"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"k=v"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := string(protocol.EncodeCommand(tt.cmd, "engine:replies")); got != tt.want {
				t.Errorf("EncodeCommand:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestEncodeCommandSurvivesAwkwardValues checks that quotes, backslashes,
// HTML characters and non-ASCII text reach the Engine byte for byte.
func TestEncodeCommandSurvivesAwkwardValues(t *testing.T) {
	t.Parallel()
	for _, id := range []string{
		`quote"d`, `back\slash`, `<script>&amp;</script>`, "ünïcødé-日本語-🙂", `{"json":"inside"}`, "tab\tless",
	} {
		cmd := command()
		cmd.User.ID = id
		cmd.User.Email = `"odd\"local"@example.com`
		raw := protocol.EncodeCommand(cmd, "r")
		var m map[string]string
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("%q: not JSON: %v (%s)", id, err, raw)
		}
		if m["userId"] != id || m["userEmail"] != cmd.User.Email {
			t.Errorf("%q: round trip gave userId %q, userEmail %q", id, m["userId"], m["userEmail"])
		}
		req, err := protocol.DecodeRequest(raw)
		if err != nil || req.UserID != id {
			t.Errorf("%q: DecodeRequest = %+v, %v", id, req, err)
		}
	}
	cmd := command()
	cmd.User.ID = "<&>"
	if raw := string(protocol.EncodeCommand(cmd, "r")); !strings.Contains(raw, `"userId":"<&>"`) {
		t.Errorf("HTML characters were escaped: %s", raw)
	}
}

func TestDecodeReply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    domain.Reply
		wantErr error
	}{
		{
			name: "with status",
			in:   `{"function":"createUser","requestId":"r1","message":"u1","status":"ok"}`,
			want: domain.Reply{RequestID: "r1", Message: "u1", Status: "ok"},
		},
		{
			name: "legacy without status",
			in:   `{"function":"createUser","requestId":"r1","message":"user Already Exist"}`,
			want: domain.Reply{RequestID: "r1", Message: domain.LegacyAlreadyExists},
		},
		{
			name: "extra fields and other order",
			in:   `{"status":"exists","extra":{"a":[1,2]},"message":"m","requestId":"r1","n":1}`,
			want: domain.Reply{RequestID: "r1", Message: "m", Status: "exists"},
		},
		{
			name: "no message",
			in:   `{"requestId":"r1"}`,
			want: domain.Reply{RequestID: "r1"},
		},
		{name: "missing requestId", in: `{"message":"m","status":"ok"}`, wantErr: protocol.ErrNoRequestID},
		{name: "empty requestId", in: `{"requestId":"","message":"m"}`, wantErr: protocol.ErrNoRequestID},
		{name: "null", in: `null`, wantErr: protocol.ErrNoRequestID},
		{name: "not JSON", in: `user Already Exist`, wantErr: protocol.ErrMalformed},
		{name: "empty", in: ``, wantErr: protocol.ErrMalformed},
		{name: "array", in: `["r1"]`, wantErr: protocol.ErrMalformed},
		{name: "number requestId", in: `{"requestId":42}`, wantErr: protocol.ErrMalformed},
		{name: "truncated", in: `{"requestId":"r1"`, wantErr: protocol.ErrMalformed},
		{name: "too large", in: `{"requestId":"r1","message":"` + strings.Repeat("x", protocol.MaxReplyBytes) + `"}`, wantErr: protocol.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := protocol.DecodeReply([]byte(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("DecodeReply error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("DecodeReply = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReplyRoundTrip(t *testing.T) {
	t.Parallel()
	for _, r := range []protocol.Reply{
		{Function: "createUser", RequestID: "r1", Message: "ünï\"code\\", Status: "ok"},
		{Function: "createUser", RequestID: "r2", Message: domain.LegacyAlreadyExists},
	} {
		raw := protocol.EncodeReply(r)
		got, err := protocol.DecodeReply(raw)
		if err != nil {
			t.Fatalf("DecodeReply(%s): %v", raw, err)
		}
		if want := (domain.Reply{RequestID: r.RequestID, Message: r.Message, Status: r.Status}); got != want {
			t.Errorf("round trip = %+v, want %+v", got, want)
		}
	}
	if raw := string(protocol.EncodeReply(protocol.Reply{RequestID: "r"})); strings.Contains(raw, "status") {
		t.Errorf("empty status must be omitted (legacy shape): %s", raw)
	}
}

func TestDecodeRequest(t *testing.T) {
	t.Parallel()
	cmd := command()
	cmd.Trace.Parent = "tp"
	got, err := protocol.DecodeRequest(protocol.EncodeCommand(cmd, "replies"))
	if err != nil {
		t.Fatal(err)
	}
	want := protocol.Request{
		Function: "createUser", RequestID: cmd.RequestID, UserID: "user-1", UserEmail: "a@example.com",
		ReplyTo: "replies", SentAt: "2026-01-02T03:04:05.6007008Z", TraceParent: "tp",
	}
	if got != want {
		t.Errorf("DecodeRequest = %+v, want %+v", got, want)
	}
	for _, bad := range []string{`nope`, `{"userId":"u"}`, `[]`} {
		if _, err := protocol.DecodeRequest([]byte(bad)); err == nil {
			t.Errorf("DecodeRequest(%s) succeeded", bad)
		}
	}
}
