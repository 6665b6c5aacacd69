package echohttp

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/domain/ensureuser"
)

// Parking. net/http keeps, for every connection it holds, a goroutine and a
// 4 KiB read and a 4 KiB write buffer, idle or not, and for a request being
// handled the request, Echo's context and the handler's stack: about 17 KB
// for an idle connection, 30 KB for a waiting request. With many
// connections (a burst queueing for the CPU, a slow Engine, a gateway that
// keeps thousands open) that is most of the service's memory.
//
// HTTP_PARK_ABOVE bounds both:
//   - beyond that many requests waiting in place, a request whose command
//     is sent leaves net/http (a hijack) and waits for the Engine's reply on
//     a goroutine of its own, whose stack never held the token check (the
//     use case's Start runs before, in place); that goroutine writes the
//     same answer the server would have written, logs and counts it;
//   - beyond that many connections held by net/http, a keep-alive
//     connection that goes idle is evicted from net/http (below), and a
//     parked request's connection, once answered, stays out: one small
//     goroutine per connection waits for its next request, then hands the
//     connection back to the server through the listener, the bytes it read
//     first replayed.
//
// Eviction: when a connection goes idle, net/http's goroutine reads the next
// request. A connection marked for eviction fails that read without reading
// anything; net/http then closes it, and Close hands the still open
// connection to a parked goroutine instead. A connection is marked only when
// its last read ended exactly at the end of a request head, so that
// net/http's read buffer holds nothing the eviction could lose (a pipelined
// request that arrived with the previous one is served first).
//
// What a parked request gives up: a client that hangs up is noticed only
// when the answer is written (the command is sent either way; the wait ends
// within ENGINE_REPLY_TIMEOUT).

// parkWriteTimeout bounds writing a parked answer.
const parkWriteTimeout = 10 * time.Second

// parking is the server's state for parked requests and connections.
type parking struct {
	above    int           // HTTP_PARK_ABOVE; < 0: never park
	ln       *parkListener // nil until Serve: without it nothing parks
	inHTTP   atomic.Int64  // connections net/http holds: new, active or idle
	inPlace  atomic.Int64  // requests waiting for the Engine in place, on net/http's goroutine
	active   atomic.Int64  // of those, the ones not idle: reading or handling a request
	freed    chan struct{} // a token when active drops, for the listener's admission
	draining atomic.Bool   // nothing parks any more
	onEvict  func(net.Conn)
	mu       sync.Mutex
	conns    map[net.Conn]bool // parked connections -> idle (waiting for the next request)
	running  int               // parked goroutines running, under mu
	none     chan struct{}     // closed when running drops to zero, for wait; under mu

	parks     prometheus.Counter
	evictions prometheus.Counter
	parkedNow prometheus.GaugeFunc
}

func (p *parking) init(above int, onEvict func(net.Conn)) {
	p.above, p.onEvict = above, onEvict
	p.conns = map[net.Conn]bool{}
	p.freed = make(chan struct{}, 1)
	p.parks = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ensure_user_http_parked_total",
		Help: "Requests whose wait for the Engine went on parked (HTTP_PARK_ABOVE).",
	})
	p.evictions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ensure_user_http_evicted_total",
		Help: "Idle keep-alive connections moved out of the HTTP server to wait parked for their next request (HTTP_PARK_ABOVE).",
	})
	p.parkedNow = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ensure_user_http_parked_connections",
		Help: "Parked connections now: waiting for the Engine's answer, or for the client's next request.",
	}, func() float64 { return float64(p.parked()) })
}

func (p *parking) collectors() []prometheus.Collector {
	return []prometheus.Collector{p.parks, p.evictions, p.parkedNow}
}

// listen wraps ln so that its connections can be parked and handed back.
func (p *parking) listen(ln net.Listener) net.Listener {
	p.ln = newParkListener(ln, p)
	return p.ln
}

// over reports whether net/http holds more connections than parking allows.
func (p *parking) over() bool {
	return p.above >= 0 && p.ln != nil && p.inHTTP.Load() > int64(p.above) && !p.draining.Load()
}

// waitParked reports whether a request about to wait for the Engine waits
// parked: when HTTP_PARK_ABOVE requests already wait in place.
func (p *parking) waitParked() bool {
	return p.above >= 0 && p.ln != nil && !p.draining.Load() && p.inPlace.Load() >= int64(p.above)
}

// start counts a parked goroutine about to run; done counts it finished.
func (p *parking) start() {
	p.mu.Lock()
	p.running++
	p.mu.Unlock()
}

func (p *parking) done() {
	p.mu.Lock()
	if p.running--; p.running == 0 && p.none != nil {
		close(p.none)
		p.none = nil
	}
	p.mu.Unlock()
}

// admitAbove is how many more connections than HTTP_PARK_ABOVE may be busy
// in net/http before parked connections that have a next request wait to be
// handed back: enough to keep the CPU busy with token checks, few enough
// that a burst of thousands does not hold thousands of net/http's buffers
// and goroutines at once.
const admitAbove = 256

// admits reports whether a parked connection may go back to net/http now.
func (p *parking) admits() bool {
	return p.above < 0 || p.active.Load() < int64(p.above+admitAbove)
}

// connState is the http.Server's ConnState hook: it counts the connections
// net/http holds and those of them that are busy, and marks an idle one for
// eviction when they are too many. A connection's hooks run on its own
// goroutine, one at a time.
func (p *parking) connState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*conn)
	if !ok { // not from the parking listener: counted, never tracked
		switch st {
		case http.StateNew:
			p.inHTTP.Add(1)
		case http.StateHijacked, http.StateClosed:
			p.inHTTP.Add(-1)
		}
		return
	}
	switch st {
	case http.StateNew:
		p.inHTTP.Add(1)
		p.busy(c, true)
	case http.StateActive:
		p.busy(c, true)
		c.evict.Store(false) // a pipelined request came from net/http's buffer
	case http.StateIdle:
		p.busy(c, false)
		if p.over() && c.headEnded() {
			c.evict.Store(true)
		}
	case http.StateHijacked, http.StateClosed:
		p.busy(c, false)
		p.inHTTP.Add(-1)
	}
}

// busy records whether c is busy in net/http.
func (p *parking) busy(c *conn, busy bool) {
	if c.busy == busy {
		return
	}
	c.busy = busy
	if busy {
		p.active.Add(1)
		return
	}
	p.active.Add(-1)
	select {
	case p.freed <- struct{}{}:
	default:
	}
}

// track notes a parked connection; idle means it waits for its next request.
func (p *parking) track(c net.Conn, idle bool) {
	p.mu.Lock()
	p.conns[c] = idle
	p.mu.Unlock()
}

func (p *parking) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// idle notes c as a parked connection waiting for its next request, for
// at most timeout; none at all once draining. Under mu, so that closeIdle
// either finds c or runs before, when draining is already set.
func (p *parking) idle(c net.Conn, timeout time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[c] = true
	if p.draining.Load() {
		timeout = 0
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
}

// parked counts the parked connections.
func (p *parking) parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// closeIdle wakes the parked connections that wait for a next request, so
// that they close; the ones still waiting for the Engine finish first.
func (p *parking) closeIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c, idle := range p.conns {
		if idle {
			_ = c.SetReadDeadline(time.Now())
		}
	}
}

// wait waits until every parked request has been answered and its
// connection closed or handed back, or ctx ends; then it closes what is
// left.
func (p *parking) wait(ctx context.Context) error {
	p.mu.Lock()
	if p.running == 0 {
		p.mu.Unlock()
		return nil
	}
	if p.none == nil {
		p.none = make(chan struct{})
	}
	none := p.none
	p.mu.Unlock()
	select {
	case <-none:
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		return context.Cause(ctx)
	}
}

// respond waits for p's outcome and answers it: in place, or parked when
// many requests wait already (park.go). Either way the exchange ends up
// answered, logged and counted once.
func (s *Server) respond(c echo.Context, x *exchange, p ensureuser.Pending) error {
	if s.park.waitParked() && s.parkWait(c, x, p) {
		return nil // the parked goroutine answers, logs and counts it
	}
	s.park.inPlace.Add(1)
	res, err := s.uc.Wait(c.Request().Context(), &p)
	s.park.inPlace.Add(-1)
	x.res = res
	if err != nil {
		return err
	}
	a := answerOf(res.Outcome)
	x.outcome = a.outcome
	return a.write(c.Response())
}

// parked is one request whose wait left the HTTP server.
type parked struct {
	ctx       context.Context // the wait's: no deadline but the reply timeout, the request's span
	x         *exchange
	p         ensureuser.Pending
	conn      net.Conn // the raw connection
	replay    []byte   // bytes the server had read beyond the request (pipelining)
	keepAlive bool
	header    http.Header // response headers set before the handler (request id, CORS)
}

// parkWait hijacks c's connection and waits for p's reply on a parked
// goroutine. It reports false, with nothing changed, when the connection
// cannot be taken (HTTP/2, a test recorder); the caller then waits in place.
func (s *Server) parkWait(c echo.Context, x *exchange, p ensureuser.Pending) bool {
	req, resp := c.Request(), c.Response()
	pk := &parked{
		x:         x,
		p:         p,
		keepAlive: req.ProtoAtLeast(1, 1) && !req.Close,
		// After the hijack net/http drops its response; its header map,
		// which holds what was set before the handler, is the parked
		// answer's own.
		header: resp.Header(),
	}
	s.park.start() // before the hijack, which takes the connection from Shutdown's view
	nc, rw, err := resp.Hijack()
	if err != nil {
		s.park.done()
		return false
	}
	pk.conn, pk.replay = unwrapConn(nc)
	if n := rw.Reader.Buffered(); n > 0 {
		b, _ := rw.Reader.Peek(n)
		pk.replay = append(bytes.Clone(b), pk.replay...)
	}
	// The request's context ends with the hijack; nothing may cut the wait
	// short but the reply timeout. It keeps the request's span.
	pk.ctx = context.Background()
	if x.span != nil {
		pk.ctx = trace.ContextWithSpan(pk.ctx, x.span)
	}
	x.parked = true
	// net/http's response holds the connection's read and write buffers and
	// the request (11 KB): the parked request writes to the connection
	// itself and must not keep them.
	x.ResponseWriter = nil
	s.park.track(pk.conn, false)
	s.park.parks.Inc()
	go s.finishParked(pk)
	return true
}

// finishParked waits for the reply, writes the answer on the parked
// connection, logs and counts the request, then waits for the client's next
// request, or closes the connection.
//
// It defers nothing: a deferred call (or a recover around the wait) makes
// the frames a parked wait holds outgrow 2 KB of stack, and 10,000 parked
// waits then hold 40 MB instead of 20. The use case's Wait is a select on
// channels; a panic there ends the process, as in any goroutine of ours.
func (s *Server) finishParked(pk *parked) {
	res, err := s.uc.Wait(pk.ctx, &pk.p)
	s.answerParked(pk, res, err)
	s.park.done()
}

// answerParked writes the parked request's answer, logs and counts it, and
// passes its connection on. It is a function of its own, never inlined, so
// that its frame is not part of the stack the goroutine holds while it waits:
// with 10,000 parked waits, 2 KB of stack each instead of 4 is 20 MB.
//
//go:noinline
func (s *Server) answerParked(pk *parked, res ensureuser.Result, err error) {
	x := pk.x
	x.res = res
	a := answerOf(res.Outcome)
	if err != nil {
		a = answerFor(err)
		x.err = err
	}
	x.outcome, x.status = a.outcome, a.status
	closing := !pk.keepAlive || s.draining.Load()
	_ = pk.conn.SetWriteDeadline(time.Now().Add(parkWriteTimeout))
	_, werr := pk.conn.Write(pk.response(a, closing))
	_ = pk.conn.SetWriteDeadline(time.Time{})
	if werr != nil {
		gone := answerOf(domain.ClientGone)
		x.outcome, x.status, x.err = gone.outcome, gone.status, werr
	}
	s.record(x)
	if werr != nil || closing {
		s.park.untrack(pk.conn)
		_ = pk.conn.Close()
		return
	}
	// Writing and logging the answer grew this goroutine's stack (to 8 KB
	// where the wait needed 2); the connection's wait for its next request,
	// which may last minutes, gets a fresh goroutine instead.
	s.lobby(pk.conn, pk.replay)
}

// rest waits, parked, for the client's next request on c, then hands c back
// to the HTTP server (so that the server's header timeout applies to that
// request, not to the idle time before it); or it closes c after the idle
// timeout, on shutdown, or when the client closes. replay holds bytes of the
// next request read already.
func (s *Server) rest(c net.Conn, replay []byte) {
	if len(replay) == 0 {
		s.park.idle(c, s.http.IdleTimeout)
		var b [1]byte
		if n, _ := c.Read(b[:]); n == 0 { // idle timeout, shutdown, or the client closed
			s.park.untrack(c)
			_ = c.Close()
			return
		}
		replay = b[:]
		_ = c.SetReadDeadline(time.Time{})
	}
	s.park.untrack(c)
	if !s.park.ln.give(&conn{Conn: c, park: &s.park, replay: replay}) {
		_ = c.Close()
	}
}

// evicted is the parked goroutine of a connection evicted from net/http
// while idle.
func (s *Server) evicted(c net.Conn) {
	s.park.evictions.Inc()
	s.lobby(c, nil)
}

// lobby starts the parked goroutine in which c waits for its next request.
func (s *Server) lobby(c net.Conn, replay []byte) {
	s.park.start()
	go func() {
		defer s.park.done()
		s.rest(c, replay)
	}()
}

// response renders the answer as net/http would have written it.
func (pk *parked) response(a answer, closing bool) []byte {
	h := pk.header
	a.setHeaders(h)
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

// errEvicted fails net/http's idle read of a connection being evicted.
var errEvicted = errors.New("connection parked while idle")

// conn is a client connection as the server's listener hands it out. It
// first yields the bytes read from it while it was parked, remembers whether
// its last read ended a request head, and can be evicted from net/http while
// idle (see Parking).
type conn struct {
	net.Conn
	park   *parking
	replay []byte
	tail   uint32       // the last four bytes read
	busy   bool         // counted in parking.active; set by the ConnState hook only
	evict  atomic.Bool  // set while idle: the next read evicts
	state  atomic.Int32 // connOpen, connEvicting, connHandedOver
}

const (
	connOpen       = iota
	connEvicting   // a read refused: Close hands the connection to a parked goroutine
	connHandedOver // Close does nothing: the connection lives on elsewhere
)

// Read yields the replayed bytes first, then reads the connection.
func (c *conn) Read(p []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		c.note(p[:n])
		return n, nil
	}
	if c.evict.Load() && c.state.CompareAndSwap(connOpen, connEvicting) {
		c.evict.Store(false)
		return 0, errEvicted
	}
	n, err := c.Conn.Read(p)
	c.note(p[:n])
	return n, err
}

// note keeps the last four bytes read.
func (c *conn) note(b []byte) {
	if len(b) > 4 {
		b = b[len(b)-4:]
	}
	for _, ch := range b {
		c.tail = c.tail<<8 | uint32(ch)
	}
}

// headEnded reports whether the last read ended with "\r\n\r\n", the end of
// a request head: then net/http's buffer holds no part of another request.
func (c *conn) headEnded() bool { return c.tail == 0x0d0a0d0a }

// Close closes the connection, unless an eviction hands it to a parked
// goroutine instead.
func (c *conn) Close() error {
	switch {
	case c.state.CompareAndSwap(connEvicting, connHandedOver):
		c.park.onEvict(c.Conn)
		return nil
	case c.state.Load() == connHandedOver:
		return nil
	}
	return c.Conn.Close()
}

// CloseWrite half-closes the connection when it can, as net/http asks
// before it hangs up on a client that sent too much.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// unwrapConn returns the raw connection under nc and the bytes it still had
// to replay.
func unwrapConn(nc net.Conn) (net.Conn, []byte) {
	if c, ok := nc.(*conn); ok {
		c.state.Store(connHandedOver)
		return c.Conn, c.replay
	}
	return nc, nil
}

// parkListener is the server's listener plus the connections parked
// goroutines hand back.
type parkListener struct {
	net.Listener
	park     *parking
	accepted chan acceptResult
	back     chan net.Conn
	closed   chan struct{}
	once     sync.Once
}

type acceptResult struct {
	conn net.Conn
	err  error
}

func newParkListener(ln net.Listener, p *parking) *parkListener {
	l := &parkListener{
		Listener: ln,
		park:     p,
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
		if c != nil {
			c = &conn{Conn: c, park: l.park}
		}
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

// Accept returns the next new or handed-back connection. A handed-back one
// waits while net/http is busy with enough connections already (admits);
// new ones never wait here, so that slow clients holding busy connections
// cannot keep others out.
func (l *parkListener) Accept() (net.Conn, error) {
	for {
		back := l.back
		if !l.park.admits() {
			back = nil
		}
		select {
		case c := <-back:
			return c, nil
		case r := <-l.accepted:
			return r.conn, r.err
		case <-l.park.freed:
		case <-l.closed:
			return nil, net.ErrClosed
		}
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
