package echohttp

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/domain/ensureuser"
)

// Parking. While a request is handled, net/http keeps for it a goroutine
// with the handler's stack, a background-read goroutine, 10 KB of connection
// and response buffers, and the request and Echo context: about 30 KB. When
// many requests are in flight at once (a burst queueing for the CPU to
// verify tokens, a slow Engine), that is most of the service's memory. A
// parked request is handled by one small goroutine and its connection leaves
// the HTTP server (a hijack): everything else is freed. When the answer is
// ready the goroutine writes it (the same status, headers and body the
// server would have written), waits for the client's next request on that
// keep-alive connection, and hands the connection back to the HTTP server
// through the listener, bytes already read included.
//
// What a parked request gives up: a client that hangs up is noticed only
// when the answer is written (the command is sent either way; the wait ends
// within ENGINE_REPLY_TIMEOUT).

// errParked tells the observe middleware that the request went on parked:
// the parked goroutine answers, logs and counts it.
var errParked = errors.New("request parked")

// Context keys the observe middleware leaves for the handler.
const (
	keyRequestID = "ensure_user.request_id"
	keyStart     = "ensure_user.start"
)

// parkWriteTimeout bounds writing a parked answer.
const parkWriteTimeout = 10 * time.Second

// parking is the server's state for parked requests.
type parking struct {
	ln    *parkListener // nil until Serve: without it nothing parks
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool // parked connections -> idle (waiting for the next request)
}

// parked is one request whose wait left the HTTP server.
type parked struct {
	conn      net.Conn
	replay    []byte // bytes the server had read beyond the request (pipelining)
	keepAlive bool
	header    http.Header // response headers set before the handler (request id, CORS)
	line      reqLine
	ctx       context.Context
	in        ensureuser.Input
}

// shouldPark reports whether the nth request in flight parks.
func (s *Server) shouldPark(n int64) bool {
	return s.cfg.ParkAbove >= 0 && n > int64(s.cfg.ParkAbove) && s.park.ln != nil && !s.draining.Load()
}

// parkRequest hijacks c's connection and handles the request on a parked
// goroutine. It reports false, with nothing changed, when the connection
// cannot be taken (HTTP/2, a test recorder), and the caller then waits
// in place.
func (s *Server) parkRequest(c echo.Context, in ensureuser.Input) bool {
	req, resp := c.Request(), c.Response()
	id, _ := c.Get(keyRequestID).(string)
	start, _ := c.Get(keyStart).(time.Time)
	pk := &parked{
		keepAlive: req.ProtoAtLeast(1, 1) && !req.Close,
		header:    resp.Header().Clone(),
		line:      reqLine{id: id, start: start, method: req.Method, route: c.Path()},
		ctx:       context.WithoutCancel(req.Context()),
		in:        in,
	}
	s.park.wg.Add(1) // before the hijack, which takes the connection from Shutdown's view
	conn, rw, err := resp.Hijack()
	if err != nil {
		s.park.wg.Done()
		return false
	}
	if n := rw.Reader.Buffered(); n > 0 {
		b, _ := rw.Reader.Peek(n)
		pk.replay = bytes.Clone(b)
	}
	pk.conn = conn
	s.park.mu.Lock()
	s.park.conns[conn] = false
	s.park.mu.Unlock()
	s.parks.Inc()
	go s.finishParked(pk)
	return true
}

// parkedConns counts the parked connections.
func (s *Server) parkedConns() int {
	s.park.mu.Lock()
	defer s.park.mu.Unlock()
	return len(s.park.conns)
}

// finishParked runs the use case, writes its answer on the parked
// connection, logs and counts the request, then returns the connection to
// the server for the next request, or closes it.
func (s *Server) finishParked(pk *parked) {
	defer s.park.wg.Done()
	res, err := s.uc.Execute(pk.ctx, pk.in)
	s.inflight.Add(-1)
	a := ansInitiated
	switch {
	case err != nil:
		a = answerFor(err)
	case res.Outcome == domain.Confirmed:
		a = ansConfirmed
	}
	closing := !pk.keepAlive || s.draining.Load()
	_ = pk.conn.SetWriteDeadline(time.Now().Add(parkWriteTimeout))
	_, werr := pk.conn.Write(pk.response(a, closing))
	_ = pk.conn.SetWriteDeadline(time.Time{})

	l := pk.line
	l.status, l.outcome, l.userID, l.engineRequestID = a.status, a.outcome, res.UserID, res.RequestID
	if err != nil && (a.status >= 500 || a.outcome == "http_error") {
		l.err = err
	}
	if werr != nil {
		l.status, l.outcome, l.err = ansClientGone.status, ansClientGone.outcome, werr
	}
	s.emit(l)

	if werr != nil || closing {
		s.unpark(pk.conn)
		_ = pk.conn.Close()
		return
	}
	s.rest(pk)
}

// rest hands the connection back to the HTTP server once the client sends
// its next request (so that the server's header timeout applies to that
// request, not to the idle time before it), or closes it after the idle
// timeout or on shutdown.
func (s *Server) rest(pk *parked) {
	conn := pk.conn
	if len(pk.replay) == 0 {
		s.park.mu.Lock()
		s.park.conns[conn] = true
		s.park.mu.Unlock()
		if s.draining.Load() { // Shutdown may have swept the idle ones already
			_ = conn.SetReadDeadline(time.Now())
		} else {
			_ = conn.SetReadDeadline(time.Now().Add(s.http.IdleTimeout))
		}
		var b [1]byte
		if n, _ := conn.Read(b[:]); n == 0 { // idle timeout, shutdown, or the client closed
			s.unpark(conn)
			_ = conn.Close()
			return
		}
		pk.replay = b[:]
		_ = conn.SetReadDeadline(time.Time{})
	}
	s.unpark(conn)
	if !s.park.ln.give(&replayConn{Conn: conn, replay: pk.replay}) {
		_ = conn.Close()
	}
}

func (s *Server) unpark(conn net.Conn) {
	s.park.mu.Lock()
	delete(s.park.conns, conn)
	s.park.mu.Unlock()
}

// closeIdleParked wakes the parked connections that wait for a next
// request, so that they close; the ones still waiting for the Engine finish
// first.
func (s *Server) closeIdleParked() {
	s.park.mu.Lock()
	defer s.park.mu.Unlock()
	for c, idle := range s.park.conns {
		if idle {
			_ = c.SetReadDeadline(time.Now())
		}
	}
}

// closeAllParked closes every parked connection: the shutdown deadline has
// passed.
func (s *Server) closeAllParked() {
	s.park.mu.Lock()
	defer s.park.mu.Unlock()
	for c := range s.park.conns {
		_ = c.Close()
	}
}

// waitParked waits until every parked request has been answered and its
// connection closed, or ctx ends.
func (s *Server) waitParked(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.park.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.closeAllParked()
		return context.Cause(ctx)
	}
}

// response renders the answer as net/http would have written it.
func (pk *parked) response(a answer, closing bool) []byte {
	h := pk.header
	h.Set(echo.HeaderCacheControl, "no-store")
	for _, kv := range a.header {
		h.Set(kv[0], kv[1])
	}
	h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	h.Set(echo.HeaderContentLength, strconv.Itoa(len(a.body)))
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	if closing {
		h.Set(echo.HeaderConnection, "close")
	}
	var b bytes.Buffer
	b.Grow(256 + len(a.body))
	b.WriteString("HTTP/1.1 ")
	b.WriteString(strconv.Itoa(a.status))
	b.WriteByte(' ')
	b.WriteString(http.StatusText(a.status))
	b.WriteString("\r\n")
	_ = h.Write(&b)
	b.WriteString("\r\n")
	b.Write(a.body)
	return b.Bytes()
}

// replayConn is a returned connection that first yields the bytes read from
// it while it was parked.
type replayConn struct {
	net.Conn
	replay []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// parkListener is the server's listener plus the connections parked
// requests hand back.
type parkListener struct {
	net.Listener
	accepted chan acceptResult
	back     chan net.Conn
	closed   chan struct{}
	once     sync.Once
}

type acceptResult struct {
	conn net.Conn
	err  error
}

func newParkListener(ln net.Listener) *parkListener {
	l := &parkListener{
		Listener: ln,
		accepted: make(chan acceptResult),
		back:     make(chan net.Conn),
		closed:   make(chan struct{}),
	}
	go l.acceptLoop()
	return l
}

func (l *parkListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		select {
		case l.accepted <- acceptResult{c, err}:
		case <-l.closed:
			if c != nil {
				_ = c.Close()
			}
			return
		}
		if errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

// Accept returns the next new or handed-back connection.
func (l *parkListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.back:
		return c, nil
	case r := <-l.accepted:
		return r.conn, r.err
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// give hands c back to the server; false when the listener is closed.
func (l *parkListener) give(c net.Conn) bool {
	select {
	case l.back <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *parkListener) Close() error {
	err := net.ErrClosed
	l.once.Do(func() {
		close(l.closed)
		err = l.Listener.Close()
	})
	return err
}
