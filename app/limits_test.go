package app

import (
	"syscall"
	"testing"
)

func TestMaxConnections(t *testing.T) {
	t.Parallel()
	if got := maxConnections(100); got != 100 {
		t.Errorf("configured 100: got %d", got)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	got := maxConnections(0)
	if lim.Cur >= 2*fdReserve && uint64(got) != min(lim.Cur-fdReserve, 1<<20) {
		t.Errorf("derived: got %d from a limit of %d", got, lim.Cur)
	}
	if got < fdReserve || uint64(got)+fdReserve > max(lim.Cur, 2*fdReserve) {
		t.Errorf("derived cap %d leaves no reserve under the limit %d", got, lim.Cur)
	}
}
