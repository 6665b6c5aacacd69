// Package protocol is the wire format between the ensure-user service and the
// trading Engine over Redis Streams, shared by the Engine buses, the reference
// Engine and the tests, so that the two sides cannot drift apart.
//
// A request is a stream entry whose single field Field holds the JSON of a
// Request; a reply is an entry on the reply stream whose field Field holds
// the JSON of a Reply. The existing Engine reads function, userId, userEmail
// and requestId, ignores the other fields, and may omit status in replies.
package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ensure-user/ensure-user/domain"
)

// Field is the name of the stream entry field that carries the JSON payload,
// in both directions.
const Field = "message"

// FunctionCreateUser is the only function the service calls.
const FunctionCreateUser = "createUser"

// MaxReplyBytes bounds the size of a reply payload DecodeReply accepts. Real
// replies are a few hundred bytes; anything larger is a producer bug or junk
// and is refused before it is parsed.
const MaxReplyBytes = 64 << 10

// Request is the createUser command as it travels on the request stream.
type Request struct {
	Function    string `json:"function"`
	RequestID   string `json:"requestId"`
	UserID      string `json:"userId"`
	UserEmail   string `json:"userEmail"`
	ReplyTo     string `json:"replyTo"`
	SentAt      string `json:"sentAt"` // RFC 3339 with nanoseconds
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
}

// Reply is the Engine's answer as it travels on the reply stream. Status is
// omitted by the legacy Engine.
type Reply struct {
	Function  string `json:"function"`
	RequestID string `json:"requestId"`
	Message   string `json:"message"`
	Status    string `json:"status,omitempty"`
}

// Errors returned by the decoders, wrapped with detail.
var (
	// ErrMalformed means the payload is not a JSON object of the expected shape.
	ErrMalformed = errors.New("malformed payload")
	// ErrNoRequestID means the payload carries no (or an empty) requestId.
	ErrNoRequestID = errors.New("payload has no requestId")
	// ErrTooLarge means the payload exceeds MaxReplyBytes.
	ErrTooLarge = errors.New("payload too large")
)

// NewRequest returns the wire form of cmd, asking for the reply on replyTo.
func NewRequest(cmd domain.Command, replyTo string) Request {
	return Request{
		Function:    FunctionCreateUser,
		RequestID:   cmd.RequestID,
		UserID:      cmd.User.ID,
		UserEmail:   cmd.User.Email,
		ReplyTo:     replyTo,
		SentAt:      cmd.SentAt.Format(time.RFC3339Nano),
		TraceParent: cmd.Trace.Parent,
		TraceState:  cmd.Trace.State,
	}
}

// EncodeCommand returns the JSON payload of cmd for the request stream. User
// ids and emails are carried byte for byte (they are valid UTF-8 by
// domain.NewUser); HTML characters are not escaped, as JSON.stringify does not.
func EncodeCommand(cmd domain.Command, replyTo string) []byte {
	return encode(NewRequest(cmd, replyTo))
}

// EncodeReply returns the JSON payload of r for the reply stream.
func EncodeReply(r Reply) []byte { return encode(r) }

// encoder is a JSON encoder that does not escape HTML, with its buffer.
type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

// encoders recycles encoders: one payload is encoded per request, and a
// fresh encoder and a growing buffer cost three allocations each time.
var encoders = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}}

// encode marshals v, which holds only strings and so cannot fail to encode.
// The result is a copy the caller owns.
func encode(v any) []byte {
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	e.buf.Reset()
	if err := e.enc.Encode(v); err != nil {
		panic(fmt.Sprintf("protocol: encode %T: %v", v, err)) // unreachable: strings only
	}
	return bytes.Clone(bytes.TrimSuffix(e.buf.Bytes(), []byte("\n")))
}

// DecodeReply parses a reply payload. It ignores unknown fields and accepts a
// missing status (legacy Engine) or function. It fails, wrapping
// ErrTooLarge, ErrMalformed or ErrNoRequestID, when the payload is larger
// than MaxReplyBytes, is not a JSON object with string fields, or has no
// requestId.
func DecodeReply(b []byte) (domain.Reply, error) {
	if len(b) > MaxReplyBytes {
		return domain.Reply{}, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(b))
	}
	var r Reply
	if err := json.Unmarshal(b, &r); err != nil {
		return domain.Reply{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if r.RequestID == "" {
		return domain.Reply{}, ErrNoRequestID
	}
	return domain.Reply{RequestID: r.RequestID, Message: r.Message, Status: r.Status}, nil
}

// DecodeRequest parses a request payload, for the Engine side. Like
// DecodeReply it ignores unknown fields and fails, wrapping ErrMalformed or
// ErrNoRequestID, when the payload is not a JSON object with string fields or
// has no requestId.
func DecodeRequest(b []byte) (Request, error) {
	var r Request
	if err := json.Unmarshal(b, &r); err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if r.RequestID == "" {
		return Request{}, ErrNoRequestID
	}
	return r, nil
}
