package keypool

import "sync/atomic"

// lease is one request's hold on a key: an in-flight slot on the key and
// its account. It is released once, when the response body is closed or
// read to its end, or when the attempt is given up.
type lease struct {
	pool     *Pool
	key      *keyState
	tokens   int
	released atomic.Bool
}

func (l *lease) release() {
	if !l.released.CompareAndSwap(false, true) {
		return
	}
	l.key.put()
	l.pool.wake()
}
