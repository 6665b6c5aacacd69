package echohttp

import (
	"fmt"
	"net"
	"net/http"
	"testing"

	"github.com/ensure-user/ensure-user/domain"
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

// chanListener is a net.Listener whose connections come from a channel.
type chanListener struct {
	conns  chan net.Conn
	closed chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { close(l.closed); return nil }
func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }

// TestHandBackWaitsForAdmission: while HTTP_PARK_ABOVE+admitAbove
// connections are busy in net/http, a parked connection with a next request
// is not handed back, but new connections still are; once one busy
// connection goes idle, the parked one goes back.
func TestHandBackWaitsForAdmission(t *testing.T) {
	t.Parallel()
	var p parking
	p.init(0, nil)
	inner := &chanListener{conns: make(chan net.Conn), closed: make(chan struct{})}
	ln := p.listen(inner)
	defer ln.Close()
	busy := make([]*conn, admitAbove)
	for i := range busy {
		busy[i] = &conn{}
		p.connState(busy[i], http.StateNew)
	}
	if p.admits() {
		t.Fatal("admits with the busy limit reached")
	}
	parked, _ := net.Pipe()
	gave := make(chan bool, 1)
	go func() { gave <- p.ln.give(&conn{Conn: parked, park: &p}) }()
	for range 20 { // new connections keep coming in meanwhile
		fresh, _ := net.Pipe()
		inner.conns <- fresh
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if c.(*conn).Conn != fresh {
			t.Fatal("a parked connection was handed back beyond the busy limit")
		}
	}
	p.connState(busy[0], http.StateIdle)
	c, err := ln.Accept()
	if err != nil || c.(*conn).Conn != parked {
		t.Fatalf("after a busy connection went idle: %v, %v; want the parked one", c, err)
	}
	if !<-gave {
		t.Fatal("give reported failure")
	}
}

// TestEveryOutcomeHasOneAnswer: each domain outcome has an answer of its
// own (a status and a JSON body), and an error wrapping an outcome's
// sentinel gets exactly that answer.
func TestEveryOutcomeHasOneAnswer(t *testing.T) {
	t.Parallel()
	if len(answers) != int(domain.Failed)+1 {
		t.Fatalf("%d answers for %d outcomes", len(answers)-1, domain.Failed)
	}
	for _, o := range domain.Outcomes() {
		a := answerOf(o)
		if a.status < 200 || len(a.body) == 0 || a.body[0] != '{' || a.outcome != o.String() {
			t.Errorf("%v: answer %d %q named %q", o, a.status, a.body, a.outcome)
		}
		if err := o.Err(); err != nil {
			if got := answerFor(fmt.Errorf("layer: %w", err)); got.status != a.status || string(got.body) != string(a.body) || got.outcome != a.outcome {
				t.Errorf("%v: answerFor(its sentinel) = %d %s (%s), want %d %s", o, got.status, got.body, got.outcome, a.status, a.body)
			}
		}
	}
}
