package membus

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// ManualEngine is the Engine side of a bus built by NewManual: the test reads
// the published commands and answers them itself.
type ManualEngine struct {
	bus      *Bus
	requests chan []byte
}

// NewManual returns a bus whose commands go to the returned ManualEngine
// instead of the reference Engine.
func NewManual(cfg Config, reg prometheus.Registerer) (*Bus, *ManualEngine, func(), error) {
	b, cleanup, err := newBus(cfg, zap.NewNop(), reg, Options{})
	if err != nil {
		return nil, nil, nil, err
	}
	e := &ManualEngine{bus: b, requests: make(chan []byte, 100_000)}
	b.publish = func(p []byte) { e.requests <- p } // buffered far beyond any test: never blocks
	return b, e, cleanup, nil
}

// Next returns the next published command payload.
func (e *ManualEngine) Next(ctx context.Context) ([]byte, error) {
	select {
	case p := <-e.requests:
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Reply hands payload to the bus's reply side, synchronously.
func (e *ManualEngine) Reply(_ context.Context, payload []byte) error {
	if !e.bus.open() {
		return errors.New("bus stopped")
	}
	e.bus.receive(payload)
	return nil
}
