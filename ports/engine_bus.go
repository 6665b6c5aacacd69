package ports

import (
	"context"

	"github.com/ensure-user/ensure-user/domain"
)

// EngineBus sends createUser commands to the Engine and hands each reply to the
// request that sent the command, and to no other.
//
// Send registers interest in cmd.RequestID, then publishes the command once
// (at-least-once delivery to the Engine's request stream; the service never
// retries a send). On success the returned channel, buffered for one, receives
// the Engine's reply to this very command, at most once; it is never closed.
// Send errors:
//   - domain.ErrBusUnavailable: the command was provably not sent (no
//     connection, dial or write refused before anything was written). Send
//     fails fast in that case, well under a second.
//   - domain.ErrSendUnknown: the outcome of the publish is unknown (the
//     connection dropped after the write, the transport's bound ran out
//     with the command written, or it is in the stream but not proven
//     durable as configured); the command may have been sent, so a reply
//     to it may still come (and counts as late).
//   - a context error when ctx had ended before Send began; nothing was
//     sent then.
//
// Once Send has begun publishing, cancelling ctx does not stop the publish:
// Send still reports whether the command went out (bounded by the
// transport's own timeout), so that a caller that hangs up mid-publish is
// told "sent" or "not sent" rather than "unknown". Once Send has returned a
// channel the command is out: cancelling ctx does not un-send it.
//
// Abandon stops waiting for the reply to requestID and frees its slot; a reply
// arriving later is counted as late and dropped. It reports whether replies
// may have been lost during the wait because the bus is not receiving right
// now (for example its reply reader is reconnecting): the caller then ends
// with domain.ErrReplyLost rather than calling the command merely
// unconfirmed. Calling Abandon for an id that already got its reply, or
// twice, is harmless.
//
// Implementations are safe for concurrent use by many requests.
type EngineBus interface {
	Send(ctx context.Context, cmd domain.Command) (<-chan domain.Reply, error)
	Abandon(requestID string) (repliesMayBeLost bool)
}
