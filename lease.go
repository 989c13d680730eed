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
// upstream body (which saves an allocation per request), serves first
// any bytes read ahead to inspect the body, and watches the bytes go by
// for the usage that settles the TPM reservation.
type lease struct {
	pool     *Pool
	key      *keyState
	tokens   int   // reserved against TPM
	inFlight int64 // on the account when the request was sent, itself included
	released atomic.Bool

	body     io.ReadCloser // the upstream body, once handed over
	ahead    []byte        // read ahead of the caller, served first
	aheadBuf [64]byte
	usage    usageScanner
}

func (l *lease) release() {
	if !l.released.CompareAndSwap(false, true) {
		return
	}
	l.usage.done()
	if l.usage.found {
		l.key.tokens.Add(int64(l.usage.total))
		if l.tokens > 0 { // a TPM reservation to settle
			l.key.account.settleTokens(l.pool.clock.Now(), l.tokens, l.usage.total)
		}
	}
	l.key.put()
	l.pool.wake()
}

// Read reads the upstream body and releases the lease at its end or on
// an error.
func (l *lease) Read(p []byte) (int, error) {
	if len(l.ahead) > 0 {
		n := copy(p, l.ahead)
		l.ahead = l.ahead[n:]
		l.usage.feed(p[:n])
		return n, nil
	}
	n, err := l.body.Read(p)
	l.usage.feed(p[:n])
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
