// Package ports declares the interfaces the ensure-user use case needs from the
// outside world. Each interface is small, takes a context first, speaks only
// domain types, and documents its contract; test/contract holds one suite per
// port that every adapter must pass.
package ports
