package fakeupstream

import (
	"context"
	"net"
	"net/http"
	"sync"
	"syscall"
)

// pipeListener is a net.Listener whose connections are in-memory pipes:
// dial hands one end to the caller and the other to Accept. No socket is
// opened, so a test in a testing/synctest bubble, whose clock moves only
// while every goroutine waits on the bubble's own channels and timers,
// can talk to the server: a goroutine reading a socket would hold it
// still.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// dial connects to the listener, as net.Dial would to a socket.
func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, &net.OpError{Op: "dial", Net: "pipe", Err: syscall.ECONNREFUSED}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// transport returns an http.Transport that dials the listener.
func (l *pipeListener) transport() *http.Transport {
	return &http.Transport{DialContext: l.dial, MaxIdleConnsPerHost: 1000}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "fakeupstream.pipe:80" }
