package protocol_test

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
)

// decodeSeeds are payloads on which the decoders must agree with
// encoding/json: the table test checks them all, and they seed
// FuzzDecodeReply and FuzzDecodeRequest (the crashers the fuzzers found are
// kept under testdata/fuzz).
var decodeSeeds = []string{
	// Real replies, and the legacy shape without status.
	`{"function":"createUser","requestId":"0b5c7f4e-3a1d-4c2b-9e8f-1a2b3c4d5e6f","message":"user-1","status":"ok"}`,
	`{"function":"createUser","requestId":"r1","message":"user Already Exist"}`,
	`{"function":"createUser","requestId":"r1","message":"m","status":"exists"}`,
	`{"function":"createUser","requestId":"r1","message":"boom","status":"error"}`,
	`{"function":"createUser","requestId":"r1","message":"m","status":"pending"}`,
	`{"function":"createUser","requestId":"r1","message":"m","status":"OK"}`,
	`{"requestId":"r1"}`,
	"\t{\r\n\"requestId\" : \"r\" ,\n\"message\":\"m\"\n}\t ",
	// Unknown members of every type, nested.
	`{"requestId":"r","a":1,"b":-1.5e+10,"c":true,"d":false,"e":null,"f":"s","g":[],"h":{},` +
		`"i":[1,[2,{"j":[]}],"x",null,true],"k":{"l":{"m":null,"n":[{}]}},"o":0,"p":-0.0e-0,"q":1E5,"r":12.34}`,
	`{"requestId":"r","a":[ 1 , { "b" : [ ] } ] , "c" : { } }`,
	// Escapes, surrogates and invalid UTF-8.
	`{"requestId":"\u0072\n\t\"\\\/\b\f\r","message":"\ud83d\ude42 \ud800 \udc00 \ud800\u0041 \ud800\ud800\udc00 \udbff\udfff"}`,
	`{"requestId":"r","message":"\u00fcn\u00ef \"q\" \\ \ud83d\ude42 \u2028 \ufffd \u0000"}`,
	`{"requestId":"r","message":"\ud800\\u0041"}`,
	`{"requestId":"r","message":"\uD83D\uDE42 \uDBFF"}`,
	"{\"requestId\":\"r\xff\xfe\",\"message\":\"\xed\xa0\x80 \xe2\x82 \xef\xbf\xbd \xf4\x90\x80\x80\"}",
	"{\"requestId\":\"ünïcødé-日本語-🙂\",\"message\":\"<&>\u2028\u2029\x7f\"}",
	// Nulls leave a field as it was.
	`{"requestId":"r","message":null,"status":null,"function":null}`,
	`{"requestId":null}`,
	`{"requestId":"a","requestId":null}`,
	// Duplicates: the last one wins.
	`{"requestId":"a","requestId":"b"}`,
	`{"requestId":"a","requestId":""}`,
	`{"status":"ok","requestId":"a","status":"exists"}`,
	// Names match case-insensitively, with Unicode folding, after unquoting.
	`{"RequestID":"c","MESSAGE":"m","Status":"ok"}`,
	`{"REQUESTID":"c","requestId":"d"}`,
	`{"requestId":"d","REQUESTID":"c"}`,
	`{"requeſtId":"s","meſſage":"m","ſtatus":"ok"}`,
	`{"request\u0049d":"esc","\u006d\u0065ssage":"m"}`,
	`{"requeſt\u0049d":"x","requestid\u0000":"y","requestId ":"z"}`,
	`{"K":1,"requestId":"r","\u212a":2}`,
	`{"Function":"f","requestId":"r"}`,
	// A known member with another type than string.
	`{"function":1,"requestId":"r"}`,
	`{"FUNCTION":{},"requestId":"r"}`,
	`{"requestId":42}`,
	`{"requestId":"r","message":[]}`,
	`{"requestId":"r","status":true}`,
	`{"requestId":"r","status":false}`,
	`{"message":{"a":1},"requestId":"r"}`,
	// Escaped statuses.
	`{"requestId":"r","status":"\u006fk"}`,
	`{"requestId":"r","status":"exist\u0073"}`,
	// No request id.
	`{"message":"no id","status":"ok"}`,
	`{"requestId":"","message":"m"}`,
	`{}`,
	`null`,
	" null \n",
	// Truncated.
	`{"function":"createUser","requestId":"r1","message":"u1","status":"ok"`,
	`{"function":"createUser","requestId":"r1","message":"u1","status":"o`,
	`{"function":"createUser","requestId":"r1","message":"u1","status":`,
	`{"function":"createUser","requestId":"r1","message":"u1","status"`,
	`{"function":"createUser","requestId":"r1",`,
	`{"requestId":"r1","a":[1,2`,
	`{"requestId":"r1","a":{"b":`,
	`{"requestId":"r\`,
	`{"requestId":"\u00`,
	`{"requestId":"r","n":-`,
	`{"requestId":"r","n":1.`,
	`{"requestId":"r","n":1e+`,
	`{"requestId":"r","t":tr`,
	`{`,
	`nul`,
	// Garbage and near misses.
	``,
	`   `,
	`user Already Exist`,
	`}`,
	`"r1"`,
	`123`,
	`true`,
	`["r1"]`,
	`[]`,
	`nullx`,
	`{"requestId":"r",}`,
	`{"requestId" "r"}`,
	`{"requestId":"r"}}`,
	`{"requestId":"r"} {}`,
	`{"requestId":"r"} trailing`,
	`{requestId:"r"}`,
	`{'requestId':'r'}`,
	"\ufeff{\"requestId\":\"r\"}",
	"{\"requestId\":\"r\"}\x00",
	`{"requestId":"r","n":01}`,
	`{"requestId":"r","n":+1}`,
	`{"requestId":"r","n":.5}`,
	`{"requestId":"r","n":1.e5}`,
	`{"requestId":"r","n":0x10}`,
	`{"requestId":"r","n":NaN}`,
	`{"requestId":"r","t":True}`,
	`{"requestId":"r","t":nulls}`,
	"{\"requestId\":\"a\x01b\"}",
	"{\"requestId\":\"a\tb\"}",
	"{\"requ\x1festId\":\"r\"}",
	`{"requestId":"\x"}`,
	`{"requestId":"\'"}`,
	`{"requestId":"\u12"}`,
	`{"requestId":"\u12g4"}`,
	`{"requestId":"r","a":[1,2,]}`,
	`{"requestId":"r","a":{"b"}}`,
	`{"requestId":"r","a":{"b":1,}}`,
	`{"requestId":"r","a":{,}}`,
	`{"requestId":"r","a":[,]}`,
	`{"requestId":"r","a":[}`,
	`{"requestId":"r","a":[1}`,
	`{"requestId":"r","a":{]}`,
	`{"requestId":"r","a":{"b":1]}`,
	`{"requestId":"r","a":{1:2}}`,
	`{"requestId":"r" "message":"m"}`,
	`{"requestId":"r",,"message":"m"}`,
	`{,"requestId":"r"}`,
	// Requests, for DecodeRequest.
	`{"function":"createUser","requestId":"r","userId":"u","userEmail":"a@example.com","replyTo":"replies",` +
		`"sentAt":"2026-01-02T03:04:05.6007008Z","traceparent":"tp","tracestate":"k=v"}`,
	`{"requestId":"r","userId":1}`,
	`{"USERID":"u","requestId":"r","TraceParent":"tp","TRACESTATE":null,"replyto":"x","SentAt":"s","useremail":"e"}`,
	`{"requestId":"r","userId":"u","userId":null,"traceparent":["tp"]}`,
}

// nested returns a reply whose unknown member x holds depth nested arrays,
// so that the top-level object makes the nesting depth+1.
func nested(depth int) []byte {
	return []byte(`{"requestId":"r","x":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`)
}

// FuzzDecodeReply checks that DecodeReply agrees with the json.Unmarshal
// decoder it replaced on every input, never accepts a reply without a
// request id, and that whatever it accepts survives a round trip through
// EncodeReply.
func FuzzDecodeReply(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Add(nested(9999))
	f.Add(nested(10000))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecodeReply(t, b)
		r, err := protocol.DecodeReply(b)
		if err != nil {
			return
		}
		if r.RequestID == "" {
			t.Fatalf("accepted a reply without requestId: %q", b)
		}
		if !utf8.ValidString(r.RequestID + r.Message + r.Status) {
			t.Fatalf("decoded invalid UTF-8 from %q: %+v", b, r)
		}
		again, err := protocol.DecodeReply(protocol.EncodeReply(protocol.Reply{
			RequestID: r.RequestID, Message: r.Message, Status: r.Status,
		}))
		if err != nil || again != r {
			t.Fatalf("round trip of %+v gave %+v, %v", r, again, err)
		}
	})
}

// FuzzDecodeRequest checks that DecodeRequest agrees with the json.Unmarshal
// decoder it replaced on every input.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Add(protocol.EncodeCommand(command(), "engine:replies"))
	f.Fuzz(checkDecodeRequest)
}

// FuzzAppendCommand checks that AppendCommand and EncodeCommand write what
// encoding/json writes for the Request, for any strings and any time.
func FuzzAppendCommand(f *testing.F) {
	f.Add("0b5c7f4e-3a1d-4c2b-9e8f-1a2b3c4d5e6f", "user-1", "a@example.com", "engine:replies",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "k=v", int64(1767323045), int64(600700800), int32(0))
	f.Add("r", `quote"d back\slash`, "<script>&amp;</script>", "tab\tless\n\r\b\f\x00\x1f\x7f",
		"\u2028\u2029", "\xff\xed\xa0\x80\xe2\x82", int64(-62135596800), int64(0), int32(-3600*5-1800))
	f.Add("ünïcødé-日本語-🙂", "\ufffd", "", "", "", "", int64(253402300799), int64(999999999), int32(14*3600))
	f.Fuzz(func(t *testing.T, requestID, userID, email, replyTo, parent, state string, sec, nsec int64, offset int32) {
		cmd := domain.Command{
			RequestID: requestID,
			User:      domain.User{ID: userID, Email: email},
			SentAt:    time.Unix(sec, nsec).In(time.FixedZone("", int(offset%(24*3600)))),
			Trace:     domain.Trace{Parent: parent, State: state},
		}
		want := referenceEncode(t, protocol.NewRequest(cmd, replyTo))
		prefix := []byte("prefix")
		got := protocol.AppendCommand(prefix, cmd, replyTo)
		if !bytes.Equal(got[:len(prefix)], prefix) || !bytes.Equal(got[len(prefix):], want) {
			t.Fatalf("AppendCommand:\n got %q\nwant prefix%q", got, want)
		}
		if got := protocol.EncodeCommand(cmd, replyTo); !bytes.Equal(got, want) {
			t.Fatalf("EncodeCommand:\n got %q\nwant %q", got, want)
		}
	})
}

// FuzzAppendReply checks that AppendReply and EncodeReply write what
// encoding/json writes for the Reply, for any strings.
func FuzzAppendReply(f *testing.F) {
	f.Add("createUser", "r1", "user-1", "ok")
	f.Add("", `"\`, "\x00\u2028\xff<&>", "")
	f.Fuzz(func(t *testing.T, function, requestID, message, status string) {
		r := protocol.Reply{Function: function, RequestID: requestID, Message: message, Status: status}
		want := referenceEncode(t, r)
		if got := protocol.AppendReply([]byte("p"), r); string(got) != "p"+string(want) {
			t.Fatalf("AppendReply:\n got %q\nwant p%q", got, want)
		}
		if got := protocol.EncodeReply(r); !bytes.Equal(got, want) {
			t.Fatalf("EncodeReply:\n got %q\nwant %q", got, want)
		}
	})
}
