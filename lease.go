package keypool

import (
	"io"
	"sync/atomic"
)

// lease is one request's hold on a key: an in-flight slot on the key and
// its account. It is released once, when the response body is read to
// its end or fails or is closed, or when the attempt is given up.
//
// A lease handed to the caller is also the response body: it wraps the
// upstream body, which saves an allocation per request.
type lease struct {
	pool     *Pool
	key      *keyState
	tokens   int
	released atomic.Bool
	body     io.ReadCloser // the upstream body, once handed over
}

func (l *lease) release() {
	if !l.released.CompareAndSwap(false, true) {
		return
	}
	l.key.put()
	l.pool.wake()
}

// Read reads the upstream body and releases the lease at its end or on
// an error.
func (l *lease) Read(p []byte) (int, error) {
	n, err := l.body.Read(p)
	if err != nil {
		l.release()
	}
	return n, err
}

// Close closes the upstream body and releases the lease.
func (l *lease) Close() error {
	err := l.body.Close()
	l.release()
	return err
}
