//go:build nodev

package main

import (
	"context"
	"errors"
	"io"

	"github.com/ensure-user/ensure-user/config"
)

// dev stands in for the dev subcommand in production builds (-tags nodev,
// as make build and the Dockerfile build), which leave out dev.go and with
// it the embedded Redis, identity provider and Engine.
func dev(context.Context, []string, config.Lookup, io.Writer, io.Writer) error {
	return usageError{errors.New("dev mode is not in this binary: production builds (make build, the Dockerfile) " +
		"leave it out with -tags nodev; run it from a checkout with make run (go run ./cmd/ensure-user dev)")}
}
