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
	"errors"
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
// Its json tags name the members on the wire; AppendCommand and
// DecodeRequest write and read them without encoding/json, and the tests hold
// both to what encoding/json does with these tags.
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
// omitted by the legacy Engine. As for Request, the json tags name the
// members, and AppendReply and DecodeReply match encoding/json on them.
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
// The result, sized up front, is its only allocation; AppendCommand writes
// the same bytes into a buffer the caller reuses.
func EncodeCommand(cmd domain.Command, replyTo string) []byte {
	return AppendCommand(make([]byte, 0, commandLen(cmd, replyTo)), cmd, replyTo)
}

// EncodeReply returns the JSON payload of r for the reply stream, with one
// allocation; AppendReply writes the same bytes into a buffer the caller
// reuses.
func EncodeReply(r Reply) []byte {
	return AppendReply(make([]byte, 0, replyLen(r)), r)
}
