package echohttp

import (
	"net"
	"testing"
)

// TestHeadEnded: a connection is marked for eviction only when its last read
// ended exactly at a request head's end, however the reads split the bytes.
func TestHeadEnded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		reads []string
		want  bool
	}{
		{[]string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n"}, true},
		{[]string{"GET / HTTP/1.1\r\nHost: x\r\n\r", "\n"}, true},
		{[]string{"GET / HTTP/1.1\r\nHost: x\r\n", "\r\n"}, true},
		{[]string{"GET / HTTP/1.1\r\nHost: x\r", "\n", "\r", "\n"}, true},
		{[]string{"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"}, false},
		{[]string{"GET / HTTP/1.1\r\n\r\nG"}, false}, // a pipelined request began
		{[]string{"GET / HTTP/1.1\r\n\r\n", "x"}, false},
		{[]string{"\r\n\r\n", ""}, true},
		{nil, false},
	} {
		c := &conn{}
		for _, r := range tc.reads {
			c.note([]byte(r))
		}
		if got := c.headEnded(); got != tc.want {
			t.Errorf("reads %q: headEnded = %v, want %v", tc.reads, got, tc.want)
		}
	}
}

// TestEvictedConnCloseHandsOver: once a read refused for eviction, Close
// hands the open connection over exactly once and never closes it; a
// connection not being evicted closes.
func TestEvictedConnCloseHandsOver(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer b.Close()
	var handed []net.Conn
	c := &conn{Conn: a, park: &parking{onEvict: func(nc net.Conn) { handed = append(handed, nc) }}}
	c.evict.Store(true)
	if n, err := c.Read(make([]byte, 8)); n != 0 || err != errEvicted {
		t.Fatalf("read while marked: %d, %v", n, err)
	}
	for range 2 {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if len(handed) != 1 || handed[0] != a {
		t.Fatalf("handed over %v, want the raw connection once", handed)
	}
	go func() { _, _ = b.Write([]byte("x")) }()
	if n, err := a.Read(make([]byte, 1)); n != 1 || err != nil {
		t.Fatalf("the handed-over connection was closed: %d, %v", n, err)
	}
	d, e := net.Pipe()
	defer e.Close()
	plain := &conn{Conn: d}
	_ = plain.Close()
	if _, err := d.Write([]byte("x")); err == nil {
		t.Fatal("a connection not being evicted stayed open after Close")
	}
}
