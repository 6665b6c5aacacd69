package protocol_test

import (
	"strings"
	"testing"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
)

// TestDecodeLikeEncodingJSON checks both decoders against encoding/json on
// every seed payload and around the nesting limit.
func TestDecodeLikeEncodingJSON(t *testing.T) {
	t.Parallel()
	inputs := append([]string(nil), decodeSeeds...)
	for _, depth := range []int{255, 256, 257, 9998, 9999, 10000, 10001} {
		inputs = append(inputs, string(nested(depth)))
	}
	for _, in := range inputs {
		checkDecodeReply(t, []byte(in))
		checkDecodeRequest(t, []byte(in))
	}
}

// TestDecodeReplySemantics spells out the encoding/json behaviours the
// decoder reproduces, so that a change to them reads as a failing case.
func TestDecodeReplySemantics(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    domain.Reply
		wantErr error
	}{
		{"case-insensitive names", `{"RequestID":"c","MESSAGE":"m","Status":"ok"}`,
			domain.Reply{RequestID: "c", Message: "m", Status: "ok"}, nil},
		{"Unicode folding of names", `{"requeſtId":"s"}`, domain.Reply{RequestID: "s"}, nil},
		{"escaped names", `{"request\u0049d":"e"}`, domain.Reply{RequestID: "e"}, nil},
		{"last duplicate wins", `{"requestId":"a","REQUESTID":"b"}`, domain.Reply{RequestID: "b"}, nil},
		{"null keeps the earlier value", `{"requestId":"a","requestId":null}`, domain.Reply{RequestID: "a"}, nil},
		{"null alone is empty", `{"requestId":"r","message":null}`, domain.Reply{RequestID: "r"}, nil},
		{"surrogate pair", `{"requestId":"\ud83d\ude42"}`, domain.Reply{RequestID: "🙂"}, nil},
		{"lone surrogates", `{"requestId":"\ud800-\udc00"}`, domain.Reply{RequestID: "\ufffd-\ufffd"}, nil},
		{"invalid UTF-8", "{\"requestId\":\"a\xffb\"}", domain.Reply{RequestID: "a\ufffdb"}, nil},
		{"escaped status", `{"requestId":"r","status":"\u006fk"}`, domain.Reply{RequestID: "r", Status: "ok"}, nil},
		{"nested unknown members", `{"x":{"y":[{"requestId":1}]},"requestId":"r"}`, domain.Reply{RequestID: "r"}, nil},
		{"function must be a string", `{"function":1,"requestId":"r"}`, domain.Reply{}, protocol.ErrMalformed},
		{"invalid unknown member", `{"requestId":"r","x":[1,]}`, domain.Reply{}, protocol.ErrMalformed},
		{"trailing data", `{"requestId":"r"} {}`, domain.Reply{}, protocol.ErrMalformed},
		{"too deep", string(nested(10000)), domain.Reply{}, protocol.ErrMalformed},
		{"deep enough", string(nested(9999)), domain.Reply{RequestID: "r"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := protocol.DecodeReply([]byte(tt.in))
			if errorClass(err) != errorClass(tt.wantErr) || got != tt.want {
				t.Errorf("DecodeReply(%q) = %+v, %v; want %+v, %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestDecodeAllocations checks that DecodeReply allocates only the strings
// it returns: the request id and the message, one allocation each whether or
// not they need unquoting (the runtime does not allocate strings of one
// byte, hence the ids of two). It does not call t.Parallel, because
// testing.AllocsPerRun counts the allocations of every goroutine.
func TestDecodeAllocations(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want float64
	}{
		{"reply", `{"function":"createUser","requestId":"0b5c7f4e-3a1d-4c2b-9e8f-1a2b3c4d5e6f","message":"user-1","status":"ok"}`, 2},
		{"legacy reply", `{"function":"createUser","requestId":"r1","message":"user Already Exist"}`, 2},
		{"no message", `{"requestId":"r1","status":"pending"}`, 1},
		{"escapes", `{"requestId":"r\u0031","message":"\"q\" \ud83d\ude42 \u00fc","status":"exists"}`, 2},
		{"unknown members", `{"requestId":"r1","x":{"a":[1,2.5e3,true,null,{"b":"c"}]},"message":"m1"}`, 2},
		{"nesting up to 256", `{"requestId":"r1","x":` + strings.Repeat(`[{"a":`, 128) + "0" + strings.Repeat("}]", 128) + `}`, 1},
		{"status ok", `{"requestId":"r1","status":"ok"}`, 1},
		{"status exists", `{"requestId":"r1","status":"exists"}`, 1},
		{"status error", `{"requestId":"r1","status":"error"}`, 1},
		{"status pending", `{"requestId":"r1","status":"pending"}`, 1},
		{"other status", `{"requestId":"r1","status":"OK"}`, 2},
	}
	for _, tt := range tests {
		b := []byte(tt.in)
		if _, err := protocol.DecodeReply(b); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		got := testing.AllocsPerRun(100, func() {
			if _, err := protocol.DecodeReply(b); err != nil {
				t.Fatal(err)
			}
		})
		if got != tt.want {
			t.Errorf("%s: %v allocations, want %v", tt.name, got, tt.want)
		}
	}
}

// TestDecodeReplyString: the string form decodes like the byte form, and its
// strings do not alias the payload.
func TestDecodeReplyString(t *testing.T) {
	payload := `{"function":"createUser","requestId":"r-1","message":"u-1","status":"ok"}`
	got, err := protocol.DecodeReplyString(payload)
	want, werr := protocol.DecodeReply([]byte(payload))
	if err != nil || werr != nil || got != want {
		t.Fatalf("DecodeReplyString = %+v, %v; DecodeReply = %+v, %v", got, err, want, werr)
	}
	if a := testing.AllocsPerRun(100, func() { _, _ = protocol.DecodeReplyString(payload) }); a > 2 {
		t.Errorf("%v allocations, want at most 2 (request id and message)", a)
	}
}
