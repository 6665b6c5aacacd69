package faults

import (
	"net"
	"sync"
	"testing"
	"time"
)

func netDialer() net.Dialer { return net.Dialer{Timeout: time.Second} }

// proxyMode is what the proxy does with traffic.
type proxyMode int

const (
	// forward copies bytes both ways.
	forward proxyMode = iota
	// blackhole keeps every connection open and accepts new ones, but
	// delivers nothing in either direction: a half-open network path, as
	// after a partition or a silently dropped NAT entry.
	blackhole
	// refuse closes every connection and each new one at once.
	refuse
)

// proxy is a TCP proxy between the service and redis-server that the test
// can make blackhole or refuse traffic, and then resume.
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	mode  proxyMode
	pairs map[*pair]struct{}
}

// pair is one proxied connection. A pair that dropped bytes can never
// forward again (the byte stream is cut), so Resume closes it.
type pair struct {
	client, server net.Conn // server is nil for a connection accepted while blackholing
	poisoned       bool
	once           sync.Once
}

func (p *pair) close() {
	p.once.Do(func() {
		_ = p.client.Close()
		if p.server != nil {
			_ = p.server.Close()
		}
	})
}

// startProxy listens on a free loopback port and forwards to target until
// the test ends.
func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, pairs: map[*pair]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for c := range p.pairs {
			c.close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// Addr is the proxy's host:port.
func (p *proxy) Addr() string { return p.ln.Addr().String() }

// Blackhole stops delivering bytes on every connection, open or new.
func (p *proxy) Blackhole() { p.set(blackhole) }

// Refuse closes every connection, and each new one as soon as it is accepted.
func (p *proxy) Refuse() { p.set(refuse) }

// Resume forwards again; connections that lost bytes are closed.
func (p *proxy) Resume() { p.set(forward) }

func (p *proxy) set(m proxyMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = m
	for c := range p.pairs {
		switch {
		case m == refuse, m == forward && c.poisoned:
			c.close()
			delete(p.pairs, c)
		case m == blackhole:
			c.poisoned = true
		}
	}
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		conn, err := p.ln.Accept()
		if err != nil {
			return // closed at cleanup
		}
		p.mu.Lock()
		mode := p.mode
		p.mu.Unlock()
		c := &pair{client: conn}
		switch mode {
		case refuse:
			_ = conn.Close()
			continue
		case forward:
			d := netDialer()
			s, err := d.Dial("tcp", p.target)
			if err != nil {
				_ = conn.Close() // like the server itself: nobody there
				continue
			}
			c.server = s
		case blackhole:
			c.poisoned = true
		}
		p.mu.Lock()
		if p.mode != mode { // changed while dialing: start over under the new mode
			p.mu.Unlock()
			c.close()
			continue
		}
		p.pairs[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.pump(c, c.client, c.server)
		if c.server != nil {
			p.wg.Add(1)
			go p.pump(c, c.server, c.client)
		}
	}
}

// pump copies from src to dst (dst nil: discards) while the pair is not
// poisoned, and closes the pair when src ends.
func (p *proxy) pump(c *pair, src, dst net.Conn) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.pairs, c)
		p.mu.Unlock()
		c.close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			drop := c.poisoned || dst == nil
			p.mu.Unlock()
			if !drop {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return // EOF, a reset, or closed by the proxy itself
		}
	}
}
