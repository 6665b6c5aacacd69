package protocol_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
)

// The reference implementations below are the encoding/json code the
// hand-written encoder and decoder replaced. The tests and fuzzers hold the
// package to them: same bytes out, same payloads accepted, same values.

// referenceEncode marshals v as the old encoder did: encoding/json with HTML
// escaping off, without the trailing newline.
func referenceEncode(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// referenceDecodeReply is the old DecodeReply, built on json.Unmarshal.
func referenceDecodeReply(b []byte) (domain.Reply, error) {
	if len(b) > protocol.MaxReplyBytes {
		return domain.Reply{}, fmt.Errorf("%w: %d bytes", protocol.ErrTooLarge, len(b))
	}
	var r protocol.Reply
	if err := json.Unmarshal(b, &r); err != nil {
		return domain.Reply{}, fmt.Errorf("%w: %v", protocol.ErrMalformed, err)
	}
	if r.RequestID == "" {
		return domain.Reply{}, protocol.ErrNoRequestID
	}
	return domain.Reply{RequestID: r.RequestID, Message: r.Message, Status: r.Status}, nil
}

// referenceDecodeRequest is the old DecodeRequest, built on json.Unmarshal.
func referenceDecodeRequest(b []byte) (protocol.Request, error) {
	var r protocol.Request
	if err := json.Unmarshal(b, &r); err != nil {
		return protocol.Request{}, fmt.Errorf("%w: %v", protocol.ErrMalformed, err)
	}
	if r.RequestID == "" {
		return protocol.Request{}, protocol.ErrNoRequestID
	}
	return r, nil
}

// errorClass names the sentinel err wraps, so that two decoders can be
// compared by outcome rather than by message.
func errorClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, protocol.ErrTooLarge):
		return "ErrTooLarge"
	case errors.Is(err, protocol.ErrMalformed):
		return "ErrMalformed"
	case errors.Is(err, protocol.ErrNoRequestID):
		return "ErrNoRequestID"
	}
	return "unwrapped error " + err.Error()
}

// checkDecodeReply fails t unless DecodeReply and referenceDecodeReply agree
// on b.
func checkDecodeReply(t *testing.T, b []byte) {
	t.Helper()
	got, err := protocol.DecodeReply(b)
	want, wantErr := referenceDecodeReply(b)
	if errorClass(err) != errorClass(wantErr) || got != want {
		t.Fatalf("DecodeReply(%q)\n got %+v, %v\nwant %+v, %v", clip(b), got, err, want, wantErr)
	}
}

// checkDecodeRequest fails t unless DecodeRequest and referenceDecodeRequest
// agree on b.
func checkDecodeRequest(t *testing.T, b []byte) {
	t.Helper()
	got, err := protocol.DecodeRequest(b)
	want, wantErr := referenceDecodeRequest(b)
	if errorClass(err) != errorClass(wantErr) || got != want {
		t.Fatalf("DecodeRequest(%q)\n got %+v, %v\nwant %+v, %v", clip(b), got, err, want, wantErr)
	}
}

// clip shortens a long payload for a failure message.
func clip(b []byte) []byte {
	const most = 200
	if len(b) <= most {
		return b
	}
	return append(b[:most:most], "..."...)
}
