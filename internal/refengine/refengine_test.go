package refengine_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/internal/refengine"
	"github.com/ensure-user/ensure-user/test/contract"
)

func TestEngineResponderContract(t *testing.T) {
	contract.RunEngineResponder(t, func(t *testing.T, mode contract.EngineMode) contract.EngineResponder {
		return contract.ReferenceEngine(refengine.NewMemoryStore(), mode)
	})
}

type failingStore struct{}

func (failingStore) Add(context.Context, string) (bool, error) {
	return false, errors.New("disk on fire")
}

func TestHandle(t *testing.T) {
	t.Parallel()
	req := protocol.Request{Function: protocol.FunctionCreateUser, RequestID: "r1", UserID: "u1"}
	tests := []struct {
		name string
		e    *refengine.Engine
		want protocol.Reply
	}{
		{
			name: "store failure is an error",
			e:    refengine.New(failingStore{}),
			want: protocol.Reply{Function: "createUser", RequestID: "r1", Message: refengine.MessageError, Status: domain.StatusError},
		},
		{
			name: "legacy store failure has no status",
			e:    refengine.New(failingStore{}, refengine.WithLegacy()),
			want: protocol.Reply{Function: "createUser", RequestID: "r1", Message: refengine.MessageError},
		},
		{
			name: "error ratio 0 never fails",
			e:    refengine.New(refengine.NewMemoryStore(), refengine.WithErrorRatio(0)),
			want: protocol.Reply{Function: "createUser", RequestID: "r1", Message: "u1", Status: domain.StatusOK},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.e.Handle(t.Context(), req); got != tt.want {
				t.Errorf("Handle = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestHandlePayloadRefusesUnanswerable(t *testing.T) {
	t.Parallel()
	e := refengine.New(refengine.NewMemoryStore())
	for _, p := range []string{`junk`, `{"function":"createUser","userId":"u"}`} {
		if _, ok := e.HandlePayload(t.Context(), []byte(p)); ok {
			t.Errorf("HandlePayload(%s) answered", p)
		}
	}
}

func TestZeroMemoryStore(t *testing.T) {
	t.Parallel()
	var s refengine.MemoryStore
	if added, err := s.Add(t.Context(), "u"); !added || err != nil {
		t.Errorf("first Add = %v, %v", added, err)
	}
	if added, _ := s.Add(t.Context(), "u"); added {
		t.Error("second Add reported new")
	}
}
