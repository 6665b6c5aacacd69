// Package requestid carries the HTTP request id (X-Request-ID) in a context,
// so every log line written for a request can name it.
package requestid

import "context"

type key struct{}

// With returns a copy of ctx carrying id.
func With(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, key{}, id)
}

// From returns the request id carried by ctx, or "".
func From(ctx context.Context) string {
	id, _ := ctx.Value(key{}).(string)
	return id
}
