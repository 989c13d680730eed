package fakeupstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// inProcess is an http.RoundTripper that hands each request straight to
// the server's handler, in a goroutine of its own, and streams its answer
// back through a pipe: no connection and no HTTP on the wire. A test in a
// testing/synctest bubble, whose clock moves only while every goroutine
// waits on the bubble's own channels and timers, can use it, and it costs
// a fraction of a round trip through net/http, so load tests of tens of
// thousands of requests stay cheap.
//
// The handler sees the request as a server would: its body, headers and
// context (a caller that gives up cancels it). Hijack and close, which the
// simulator uses to reset a connection, fails the request before its
// answer, or breaks the body after it, as a reset connection does.
type inProcess struct {
	handler http.Handler
	wg      sync.WaitGroup // handlers still running

	mu     sync.Mutex
	closed bool
	stop   context.Context // ended by close: ends every handler's request
	end    context.CancelFunc
}

// close ends every request being answered and waits for their handlers.
func (t *inProcess) close() {
	t.mu.Lock()
	t.closed = true
	if t.end != nil {
		t.end()
	}
	t.mu.Unlock()
	t.wg.Wait()
}

// errClosed is what a request to a closed server gets.
var errClosed = &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}

func (t *inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errClosed
	}
	if t.stop == nil {
		t.stop, t.end = context.WithCancel(context.Background())
	}
	stop := t.stop
	t.wg.Add(1)
	t.mu.Unlock()
	ctx, cancel := context.WithCancel(req.Context())
	unhook := context.AfterFunc(stop, cancel)
	in := req.Clone(ctx)
	if in.Body == nil {
		in.Body = http.NoBody
	}
	pr, pw := io.Pipe()
	w := &pipeResponse{header: http.Header{}, body: pw, started: make(chan struct{})}
	go func() {
		defer t.wg.Done()
		defer unhook()
		defer in.Body.Close()
		t.handler.ServeHTTP(w, in)
		w.finish()
	}()
	go func() {
		// A request ended (by its caller, or by close) unblocks a handler
		// writing what nobody will read.
		<-ctx.Done()
		pr.CloseWithError(ctx.Err())
	}()
	select {
	case <-w.started:
	case <-req.Context().Done():
		cancel()
		pr.CloseWithError(req.Context().Err())
		return nil, req.Context().Err()
	}
	if w.reset {
		cancel()
		return nil, errReset
	}
	resp := &http.Response{
		Status: strconv.Itoa(w.status) + " " + http.StatusText(w.status), StatusCode: w.status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: w.sent, ContentLength: -1, Request: req,
		Body: &cancelOnClose{ReadCloser: pr, cancel: cancel},
	}
	if n, err := strconv.ParseInt(w.sent.Get("Content-Length"), 10, 64); err == nil {
		resp.ContentLength = n
	}
	return resp, nil
}

// errReset is what a request whose connection the simulator reset gets.
var errReset = &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}

// cancelOnClose ends the handler's request when the caller has read the
// whole answer or closes the body, as closing a connection does.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelOnClose) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.cancel()
	}
	return n, err
}

func (b *cancelOnClose) Close() error {
	b.cancel()
	return b.ReadCloser.Close()
}

// pipeResponse is the handler's side of an inProcess request.
type pipeResponse struct {
	header  http.Header
	sent    http.Header // header as it was when the answer started
	status  int
	body    *io.PipeWriter
	started chan struct{}
	once    sync.Once
	reset   bool // hijacked and closed before the answer started
}

func (w *pipeResponse) Header() http.Header { return w.header }

func (w *pipeResponse) WriteHeader(status int) {
	w.once.Do(func() {
		w.status, w.sent = status, w.header.Clone()
		close(w.started)
	})
}

func (w *pipeResponse) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

// Flush is a no-op: the pipe hands every write over as it is made.
func (w *pipeResponse) Flush() { w.WriteHeader(http.StatusOK) }

// Hijack gives the handler a connection whose Close resets the request.
func (w *pipeResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c := &resetConn{w: w}
	return c, bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c)), nil
}

// finish ends the answer once the handler returns.
func (w *pipeResponse) finish() {
	w.WriteHeader(http.StatusOK)
	w.body.Close()
}

// resetConn is a hijacked connection: closing it resets the request.
type resetConn struct {
	w *pipeResponse
}

func (c *resetConn) Close() error {
	started := true
	c.w.once.Do(func() {
		started = false
		c.w.reset = true
		close(c.w.started)
	})
	if started {
		c.w.body.CloseWithError(errReset)
	}
	return nil
}

func (c *resetConn) Read([]byte) (int, error) { return 0, io.EOF }
func (c *resetConn) Write(p []byte) (int, error) {
	return 0, errors.New("fakeupstream: write on a reset connection")
}
func (c *resetConn) LocalAddr() net.Addr              { return memAddr{} }
func (c *resetConn) RemoteAddr() net.Addr             { return memAddr{} }
func (c *resetConn) SetDeadline(time.Time) error      { return nil }
func (c *resetConn) SetReadDeadline(time.Time) error  { return nil }
func (c *resetConn) SetWriteDeadline(time.Time) error { return nil }

// memAddr is the address of both ends of an in-process request.
type memAddr struct{}

func (memAddr) Network() string { return "memory" }
func (memAddr) String() string  { return "fakeupstream.invalid:80" }
