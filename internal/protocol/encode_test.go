package protocol_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
)

// TestAppendEscapes checks the strings encoding/json escapes in its own way,
// each against the bytes it writes and against encoding/json itself.
func TestAppendEscapes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string // the JSON string, quotes included
	}{
		{"plain", "user-1", `"user-1"`},
		{"empty", "", `""`},
		{"quote and backslash", `a"b\c`, `"a\"b\\c"`},
		{"slash and apostrophe stay", `/'`, `"/'"`},
		{"short escapes", "\n\r\t\b\f", `"\n\r\t\b\f"`},
		{"other control characters", "\x00\x01\x0b\x1f", `"\u0000\u0001\u000b\u001f"`},
		{"DEL stays", "\x7f", "\"\x7f\""},
		{"HTML stays", "<script>&amp;</script>", `"<script>&amp;</script>"`},
		{"line and paragraph separators", "a\u2028b\u2029c", `"a\u2028b\u2029c"`},
		{"other separators stay", "\u2027\u202a\u0085", "\"\u2027\u202a\u0085\""},
		{"non-ASCII stays", "ünïcødé-日本語-🙂", `"ünïcødé-日本語-🙂"`},
		{"invalid byte", "a\xffb", `"a\ufffdb"`},
		{"truncated sequence", "a\xe2\x82", `"a\ufffd\ufffd"`},
		{"UTF-8 surrogate", "\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`},
		{"beyond U+10FFFF", "\xf4\x90\x80\x80", `"\ufffd\ufffd\ufffd\ufffd"`},
		{"replacement character stays", "\ufffd", "\"\ufffd\""},
		{"overlong encoding", "\xc0\xaf", `"\ufffd\ufffd"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cmd := command()
			cmd.RequestID, cmd.User.ID, cmd.User.Email = tt.in, tt.in, tt.in
			cmd.Trace = domain.Trace{Parent: tt.in, State: tt.in}
			want := referenceEncode(t, protocol.NewRequest(cmd, tt.in))
			got := protocol.AppendCommand(nil, cmd, tt.in)
			if !bytes.Equal(got, want) {
				t.Errorf("AppendCommand:\n got %q\nwant %q", got, want)
			}
			if !bytes.Contains(got, []byte(`"userId":`+tt.want+`,`)) {
				t.Errorf("AppendCommand(%q) = %s, want userId %s", tt.in, got, tt.want)
			}
			r := protocol.Reply{Function: tt.in, RequestID: tt.in, Message: tt.in, Status: tt.in}
			want = referenceEncode(t, r)
			if got := protocol.AppendReply(nil, r); !bytes.Equal(got, want) {
				t.Errorf("AppendReply:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// TestAppendCommandTimes checks sentAt against encoding/json for times in
// and out of UTC, with and without fractions, and beyond year 9999.
func TestAppendCommandTimes(t *testing.T) {
	t.Parallel()
	for _, at := range []time.Time{
		{},
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 600700800, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 1, time.FixedZone("IST", 5*3600+1800)),
		time.Date(2026, 1, 2, 3, 4, 5, 999999999, time.FixedZone("", -(3*3600+30*60+7))),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(12345, 12, 31, 23, 59, 59, 1000, time.UTC),
		time.Unix(1<<62, 999999999).UTC(),
		time.Unix(-1<<62, 0).In(time.FixedZone("", 14*3600)),
	} {
		cmd := command()
		cmd.SentAt = at
		want := referenceEncode(t, protocol.NewRequest(cmd, "r"))
		if got := protocol.AppendCommand(nil, cmd, "r"); !bytes.Equal(got, want) {
			t.Errorf("AppendCommand(%v):\n got %s\nwant %s", at, got, want)
		}
		if got := protocol.EncodeCommand(cmd, "r"); !bytes.Equal(got, want) {
			t.Errorf("EncodeCommand(%v):\n got %s\nwant %s", at, got, want)
		}
	}
}

// TestEncodeAllocations checks the allocation budget of the encoders:
// nothing for an Append into a buffer with room, the result alone for an
// Encode. It does not call t.Parallel, because testing.AllocsPerRun counts
// the allocations of every goroutine.
func TestEncodeAllocations(t *testing.T) {
	cmd := command()
	cmd.SentAt = cmd.SentAt.In(time.FixedZone("", 3600))
	cmd.Trace = domain.Trace{Parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", State: "k=v"}
	cmd.User.ID = "needs \"escaping\"\n\u2028\xff"
	reply := protocol.Reply{Function: "createUser", RequestID: cmd.RequestID, Message: cmd.User.ID, Status: "ok"}
	buf := make([]byte, 0, 1024)
	tests := []struct {
		name string
		want float64
		fn   func()
	}{
		{"AppendCommand", 0, func() { buf = protocol.AppendCommand(buf[:0], cmd, "engine:replies") }},
		{"AppendReply", 0, func() { buf = protocol.AppendReply(buf[:0], reply) }},
		{"EncodeCommand", 1, func() { buf = protocol.EncodeCommand(cmd, "engine:replies") }},
		{"EncodeReply", 1, func() { buf = protocol.EncodeReply(reply) }},
	}
	for _, tt := range tests {
		if got := testing.AllocsPerRun(100, tt.fn); got != tt.want {
			t.Errorf("%s: %v allocations, want %v", tt.name, got, tt.want)
		}
	}
}
