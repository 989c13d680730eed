package keypool

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// lease is one request's hold on a key: an in-flight slot on the key and
// its account, and the tokens reserved against TPM. It is released once,
// when the response body is read to its end or fails or is closed, or
// when the attempt is given up.
//
// A lease handed to the caller is also the response body: it wraps the
// upstream body (which saves an allocation per request), serves first
// any bytes read ahead to inspect the body, and watches the bytes go by
// for the usage that settles the TPM reservation.
type lease struct {
	pool   *Pool
	key    *keyState
	tokens int // reserved against TPM
	// inFlight is how many requests the provider was working on for the
	// account when this one was sent, itself included; served is the
	// fewer of that and how many it was working on when the answer came.
	// Both counts may be one too high (the provider frees a slot as soon
	// as it has written an answer, before keypool has read it), each at
	// its own moment: the fewer is the safer account of what the
	// provider served at once.
	inFlight, served int64
	atProvider       atomic.Bool // sent, and the provider is not done with it
	released         atomic.Bool

	// storeLease names the lease's slot in the pool's Store, when it has
	// one; sharedInFlight is how many slots the account held in every
	// replica, this one's included, when the store granted it.
	storeLease     string
	sharedInFlight int64
	sharedDone     bool // the store's slot was given back already
	renewEvery     time.Duration
	stopRenew      func() bool // stops the renewal of storeLease; under mu
	sent           sentBody    // the request body of the attempt made under the lease
	// mapped is the model the caller asked for, when the key's ModelMap
	// maps it: a model_not_found answer then blames the mapping.
	mapped string
	// cause describes the attempt's answer for observers, as
	// "401 invalid_api_key"; set only when the pool has observers.
	cause string

	ahead    []byte // read ahead of the caller, served first
	aheadBuf [64]byte

	// mu lets Close, which net/http allows from another goroutine to
	// abort a Read, run beside a Read.
	mu       sync.Mutex
	body     io.ReadCloser // the upstream body, once handed over
	answered bool          // a 2xx answer was handed over: its tokens count
	scan     bool          // the body is scanned for usage
	closed   bool
	usage    usageScanner
}

// errBodyClosed is what Read returns after Close, as net/http's bodies do.
var errBodyClosed = errors.New("keypool: read on closed response body")

// attach makes the lease the body of resp, which is handed to the caller.
func (l *lease) attach(resp *http.Response) {
	l.body = resp.Body
	l.answered = resp.StatusCode >= 200 && resp.StatusCode < 300
	// An encoded body cannot be scanned for usage without decoding it:
	// the scanner stands aside.
	l.scan = !encoded(resp.Header) && resp.StatusCode != http.StatusSwitchingProtocols
}

// takeAhead returns rc with the bytes read ahead of it in front, and
// forgets them.
func (l *lease) takeAhead(rc io.ReadCloser) io.ReadCloser {
	if len(l.ahead) == 0 {
		return rc
	}
	b := &prefixedBody{prefix: l.ahead, rc: rc}
	l.ahead = nil
	return b
}

// sending counts the request at the provider, as it is sent.
func (l *lease) sending() {
	l.atProvider.Store(true)
	// With a store, the other replicas' requests count too: the provider
	// counts them all.
	l.inFlight = max(l.key.account.slots.sent(), l.sharedInFlight)
	l.served = l.inFlight
}

// providerDone counts the provider done with the request: it answered,
// and unless the answer is a stream it has written all of it.
func (l *lease) providerDone() {
	if !l.atProvider.CompareAndSwap(true, false) {
		return
	}
	if l.storeLease != "" && !l.released.Load() {
		// The store counts what the provider works on, as the limit
		// learns from it: the slot goes back now, and the tokens are
		// settled when the answer has been read. How many the account
		// still held then is the other count of what was served.
		if n := l.pool.shared.release(l, 0); n > 0 {
			l.served = min(l.inFlight, n)
		}
		l.sharedDone = true
	} else if l.sharedInFlight == 0 { // with a store, this process sees only its own
		l.served = min(l.inFlight, l.key.account.slots.atProvider.Load())
	}
	l.key.account.slots.done()
}

func (l *lease) release() {
	if !l.released.CompareAndSwap(false, true) {
		return
	}
	l.providerDone()
	l.mu.Lock()
	found, used := l.usage.found, l.usage.tokens()
	l.usage.done()
	l.mu.Unlock()
	if found {
		l.key.tokens.Add(int64(used))
	}
	refund := 0 // of the tokens reserved
	switch {
	case l.tokens == 0:
	case !l.answered:
		refund = l.tokens // refused or failed: the provider counted nothing
	case found:
		refund = l.tokens - used
	}
	// An answer without usage keeps its reservation as the estimate of
	// what it used.
	if refund != 0 {
		l.key.account.budgets.settle(l.pool.clock.Now(), l.tokens, l.tokens-refund)
	}
	if l.storeLease != "" {
		l.mu.Lock()
		if l.stopRenew != nil {
			l.stopRenew()
		}
		l.mu.Unlock()
		if !l.sharedDone || refund != 0 {
			l.pool.shared.release(l, refund)
		}
	}
	l.key.put()
	l.pool.wake()
}

// keepAlive renews the lease's slot in the store from when the store
// grants it until the lease is released, so that a request whose answer
// comes, or is read, for longer than the store's lease time keeps it.
func (l *lease) keepAlive() {
	if l.storeLease == "" {
		return
	}
	var renew func()
	renew = func() {
		if l.released.Load() {
			return
		}
		l.pool.shared.renew(l)
		l.mu.Lock()
		if !l.released.Load() {
			l.stopRenew = l.pool.clock.AfterFunc(l.renewEvery, renew)
		}
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.stopRenew = l.pool.clock.AfterFunc(l.renewEvery, renew)
	l.mu.Unlock()
}

// Read reads the upstream body and releases the lease at its end or on
// an error.
func (l *lease) Read(p []byte) (int, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, errBodyClosed
	}
	if len(l.ahead) > 0 {
		n := copy(p, l.ahead)
		l.ahead = l.ahead[n:]
		l.feed(p[:n])
		l.mu.Unlock()
		return n, nil
	}
	l.mu.Unlock()
	n, err := l.body.Read(p)
	if n > 0 && l.scan {
		l.mu.Lock()
		if !l.closed {
			l.feed(p[:n])
		}
		l.mu.Unlock()
	}
	if err != nil {
		l.release()
	}
	return n, err
}

// feed scans p for usage; l.mu is held.
func (l *lease) feed(p []byte) {
	if l.scan && !l.released.Load() {
		l.usage.feed(p)
	}
}

// Close closes the upstream body and releases the lease.
func (l *lease) Close() error {
	err := l.body.Close()
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.release()
	return err
}
