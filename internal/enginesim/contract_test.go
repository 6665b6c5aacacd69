package enginesim

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/rueidis"

	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/test/contract"
)

// TestEngineResponderContract runs the Engine-side contract against the
// whole runner, through Redis: the same suite the in-memory reference Engine
// passes, so the two cannot drift.
func TestEngineResponderContract(t *testing.T) {
	backends(t, func(t *testing.T, srv *server) {
		contract.RunEngineResponder(t, func(t *testing.T, mode contract.EngineMode) contract.EngineResponder {
			cfg := testConfig(t)
			cfg.ReplyStream = "replies" // what the suite's requests name as replyTo
			switch mode {
			case contract.EngineLegacy:
				cfg.Legacy = true
			case contract.EngineFailing:
				cfg.ErrorRatio = 1
			}
			startEngine(t, srv, cfg)
			return runnerResponder{srv: srv, cfg: cfg}
		})
	})
}

// runnerResponder calls a running Sim as a service does: it XADDs the
// request and waits for the reply with its request id on its replyTo.
type runnerResponder struct {
	srv *server
	cfg Config
}

func (r runnerResponder) Call(ctx context.Context, request []byte) ([]byte, error) {
	req, err := protocol.DecodeRequest(request)
	if err != nil {
		return nil, err
	}
	c := r.srv.raw
	err = c.Do(ctx, c.B().Xadd().Key(r.cfg.RequestStream).Id("*").FieldValue().
		FieldValue(protocol.Field, string(request)).Build()).Error()
	if err != nil {
		return nil, fmt.Errorf("xadd: %w", err)
	}
	for last := "0"; ; {
		streams, err := c.Do(ctx, c.B().Xread().Count(100).Block(100).Streams().
			Key(req.ReplyTo).Id(last).Build()).AsXReadSlices()
		if rueidis.IsRedisNil(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("xread: %w", err)
		}
		for _, e := range streams[req.ReplyTo] {
			last = e.ID
			payload := []byte(e.FieldValues[0].Value)
			if rep, err := protocol.DecodeReply(payload); err == nil && rep.RequestID == req.RequestID {
				return payload, nil
			}
		}
	}
}

// TestUserSetContract runs the contract against refengine on the Redis set
// alone, as the memory store runs it.
func TestUserSetContract(t *testing.T) {
	srv := realRedis(t)
	contract.RunEngineResponder(t, func(t *testing.T, mode contract.EngineMode) contract.EngineResponder {
		return contract.ReferenceEngine(NewUserSet(srv.raw, testConfig(t).RequestStream+":users"), mode)
	})
}
