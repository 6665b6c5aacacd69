// Package domain holds the value objects, the Engine command and reply, and the
// error sentinels of the ensure-user service. It imports only the standard library:
// every technology lives behind a port (package ports) and is plugged in by app.
package domain
