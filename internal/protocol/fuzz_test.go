package protocol_test

import (
	"testing"
	"unicode/utf8"

	"github.com/ensure-user/ensure-user/internal/protocol"
)

// FuzzDecodeReply checks that DecodeReply never panics, never accepts a reply
// without a request id, and that whatever it accepts survives a round trip
// through EncodeReply. The seed corpus is in testdata/fuzz/FuzzDecodeReply.
func FuzzDecodeReply(f *testing.F) {
	f.Add([]byte(`{"function":"createUser","requestId":"r1","message":"u1","status":"ok"}`))
	f.Add([]byte(`{"function":"createUser","requestId":"r1","message":"user Already Exist"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.DecodeReply(b)
		if err != nil {
			return
		}
		if r.RequestID == "" {
			t.Fatalf("accepted a reply without requestId: %q", b)
		}
		if !utf8.ValidString(r.RequestID + r.Message + r.Status) {
			return // encoding/json replaces invalid UTF-8, so no exact round trip
		}
		again, err := protocol.DecodeReply(protocol.EncodeReply(protocol.Reply{
			RequestID: r.RequestID, Message: r.Message, Status: r.Status,
		}))
		if err != nil || again != r {
			t.Fatalf("round trip of %+v gave %+v, %v", r, again, err)
		}
	})
}
