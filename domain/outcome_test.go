package domain

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"
)

// TestEverySentinelHasOneOutcome: every Err* sentinel declared in
// errors.go is the sentinel of exactly one outcome, OutcomeOf finds that
// outcome through wrapping, and outcome names are unique. The sentinels are
// read from the source, so a new one without its row fails here.
func TestEverySentinelHasOneOutcome(t *testing.T) {
	t.Parallel()
	f, err := parser.ParseFile(token.NewFileSet(), "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	ast.Inspect(f, func(n ast.Node) bool {
		if v, ok := n.(*ast.ValueSpec); ok {
			for _, name := range v.Names {
				if strings.HasPrefix(name.Name, "Err") {
					declared = append(declared, name.Name)
				}
			}
		}
		return true
	})
	sentinels := map[string]error{
		"ErrNoToken": ErrNoToken, "ErrInvalidToken": ErrInvalidToken, "ErrInvalidPayload": ErrInvalidPayload,
		"ErrVerifierUnavailable": ErrVerifierUnavailable, "ErrBusUnavailable": ErrBusUnavailable, "ErrBusy": ErrBusy,
		"ErrSendUnknown": ErrSendUnknown, "ErrEngineFailed": ErrEngineFailed, "ErrReplyLost": ErrReplyLost,
	}
	if len(declared) != len(sentinels) {
		t.Fatalf("errors.go declares %v; this test knows %d sentinels: add the new one here and its row to the outcome table", declared, len(sentinels))
	}
	for _, name := range declared {
		err, ok := sentinels[name]
		if !ok {
			t.Fatalf("%s: unknown to this test", name)
		}
		var rows []Outcome
		for _, o := range Outcomes() {
			if o.Err() == err {
				rows = append(rows, o)
			}
		}
		if len(rows) != 1 {
			t.Errorf("%s is the sentinel of %v, want exactly one outcome", name, rows)
			continue
		}
		if got := OutcomeOf(fmt.Errorf("ctx: %w", err)); got != rows[0] {
			t.Errorf("OutcomeOf(wrapped %s) = %v, want %v", name, got, rows[0])
		}
	}
	if got := OutcomeOf(fmt.Errorf("wait: %w", context.Canceled)); got != ClientGone {
		t.Errorf("OutcomeOf(context.Canceled) = %v, want client_gone", got)
	}
	if got := OutcomeOf(fmt.Errorf("boom")); got != Failed {
		t.Errorf("OutcomeOf(unknown error) = %v, want internal_error", got)
	}
	names := map[string]bool{}
	for _, o := range Outcomes() {
		if n := o.String(); n == "" || n == "unknown" || names[n] {
			t.Errorf("outcome %d has the name %q, empty or taken", o, n)
		}
		names[o.String()] = true
	}
}
