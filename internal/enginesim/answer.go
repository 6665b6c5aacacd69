package enginesim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/redis/rueidis"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/internal/refengine"
)

// outgoing is what becomes of one request entry: a reply to write at due,
// then an XACK. An empty stream means ack only (malformed or dropped).
type outgoing struct {
	id      string // the request entry
	due     time.Time
	stream  string
	nomk    bool // XADD NOMKSTREAM
	payload []byte
	span    trace.Span // the command's recording span, ended once acked; nil if none
}

// fate is how a decoded request is handled.
type fate int

const (
	fateMalformed fate = iota // not answerable
	fateStore                 // createUser: refengine answers from the batch's SADD
	fateFail                  // createUser drawn by ENGINE_ERROR_RATIO: status error, store untouched
	fateOther                 // another function: refengine answers status error
)

// answer turns a batch of request entries into their outgoing replies, with
// one round trip to Redis for the whole batch's SADDs. A connection error
// fails the batch, which then stays pending.
//
// It draws ENGINE_ERROR_RATIO itself, before the SADDs, so that a failed
// request touches no store, as refengine.WithErrorRatio does; refengine
// still writes every reply, so replies cannot drift from the in-memory
// reference Engine.
//
// With tracing on, it starts each command's span (see WithTracing) and
// hands it over in the command's outgoing, for the writer to end.
func (s *Sim) answer(ctx context.Context, b batch) ([]outgoing, error) {
	entries := b.entries
	reqs := make([]protocol.Request, len(entries))
	fates := make([]fate, len(entries))
	var spans []trace.Span // nil: tracing off
	if s.tracer != nil {
		spans = make([]trace.Span, len(entries))
	}
	var users []string
	for i, e := range entries {
		req, err := s.decode(e)
		switch {
		case err != nil:
			s.log.Debug("malformed request entry skipped", zap.String("entry", e.ID), zap.Error(err))
			continue
		case req.Function != protocol.FunctionCreateUser:
			s.log.Debug("unsupported function answered with an error", zap.String("entry", e.ID),
				zap.String("function", req.Function), zap.String("request_id", req.RequestID))
			fates[i] = fateOther
		case chance(s.cfg.ErrorRatio):
			fates[i] = fateFail
		default:
			fates[i] = fateStore
			users = append(users, req.UserID)
		}
		reqs[i] = req
		if spans != nil {
			spans[i] = s.tracer.startCommand(&reqs[i], e.ID, len(entries), b.read)
		}
	}
	var saddStart time.Time
	if spans != nil {
		saddStart = time.Now()
	}
	answers, err := s.users.addAll(ctx, users)
	if err != nil {
		s.metrics.errs[opSadd].Inc()
		for _, span := range spans {
			if span != nil {
				s.tracer.failed(span, err)
			}
		}
		return nil, err
	}
	var saddEnd time.Time
	if spans != nil {
		saddEnd = time.Now()
	}
	var refused []error
	for _, a := range answers {
		if a.err != nil {
			s.metrics.errs[opSadd].Inc()
			refused = append(refused, a.err)
		}
	}
	if len(refused) > 0 {
		s.log.Warn("redis refused SADDs: those requests are answered status error",
			zap.Int("refused", len(refused)), zap.Error(refused[0]))
	}

	engine := refengine.New(&replay{users: users, answers: answers}, s.opts...)
	now := time.Now()
	out := make([]outgoing, len(entries))
	next := 0 // index into answers
	for i, e := range entries {
		out[i] = outgoing{id: e.ID, due: now}
		var span trace.Span
		if spans != nil {
			span = spans[i]
			out[i].span = span
		}
		var reply protocol.Reply
		result := ResultMalformed
		switch fates[i] {
		case fateMalformed:
			s.metrics.commands[result].Inc()
			continue
		case fateFail:
			reply, result = s.failing.Handle(ctx, reqs[i]), ResultError
		case fateOther:
			reply, result = engine.Handle(ctx, reqs[i]), ResultUnsupported
		case fateStore:
			reply = engine.Handle(ctx, reqs[i])
			a := answers[next]
			switch {
			case a.err != nil:
				result = ResultError
			case a.added:
				result = ResultOK
			default:
				result = ResultExists
			}
			if span != nil {
				s.tracer.lookedUp(span, saddStart, saddEnd, len(users), a.err)
			}
			next++
		}
		if chance(s.cfg.DropRatio) {
			// The Engine did its work but the reply is lost: the user exists.
			s.metrics.commands[ResultDropped].Inc()
			if span != nil {
				s.tracer.answered(span, ResultDropped, protocol.Reply{})
			}
			continue
		}
		s.metrics.commands[result].Inc()
		if span != nil {
			s.tracer.answered(span, result, reply)
		}
		out[i].stream, out[i].nomk = s.replyStream(reqs[i].ReplyTo)
		out[i].payload = protocol.EncodeReply(reply)
		out[i].due = now.Add(s.delay())
	}
	return out, nil
}

// Reasons an entry is malformed.
var (
	errNoMessage  = errors.New("entry has no " + protocol.Field + " field")
	errBadReplyTo = errors.New("replyTo names the request stream or the users key")
	errEntryGone  = errors.New("entry was deleted while pending")
)

// decode extracts the request of a stream entry.
func (s *Sim) decode(e rueidis.XRangeSlice) (protocol.Request, error) {
	if e.FieldValues == nil {
		return protocol.Request{}, errEntryGone // trimmed or XDELed after it was delivered
	}
	for _, fv := range e.FieldValues {
		if fv.Field != protocol.Field {
			continue
		}
		req, err := protocol.DecodeRequest([]byte(fv.Value))
		if err != nil {
			return protocol.Request{}, fmt.Errorf("decode: %w", err)
		}
		if req.ReplyTo == s.cfg.RequestStream || req.ReplyTo == s.cfg.UsersKey {
			return protocol.Request{}, errBadReplyTo
		}
		return req, nil
	}
	return protocol.Request{}, errNoMessage
}

// replyStream returns where the reply to a request with replyTo goes, and
// whether with NOMKSTREAM.
//
// A replyTo other than the Engine's own ReplyStream is a per-instance stream
// of one service instance: if it is gone, so is the instance that would read
// it, and recreating it would only leak a key, hence NOMKSTREAM. The shared
// ReplyStream (the reply to a request without replyTo, or whose replyTo is
// ReplyStream) is written without NOMKSTREAM: a service reading it creates
// nothing and reads from the stream's last id at start, so the stream may
// not exist yet when the first reply is due, and NOMKSTREAM would drop that
// reply.
func (s *Sim) replyStream(replyTo string) (stream string, nomk bool) {
	if replyTo == "" || replyTo == s.cfg.ReplyStream {
		return s.cfg.ReplyStream, false
	}
	return replyTo, true
}

// delay returns how long the next reply waits: ReplyDelay, or a uniform draw
// in [ReplyDelay, ReplyDelayMax).
func (s *Sim) delay() time.Duration {
	lo, hi := s.cfg.ReplyDelay, s.cfg.ReplyDelayMax
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo)
}

// chance reports true with probability ratio.
func chance(ratio float64) bool {
	return ratio > 0 && rand.Float64() < ratio
}
