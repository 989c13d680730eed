package keypool

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Transport is an http.RoundTripper that sends each request with a key
// from a Pool, waits when every key is busy, and fails over to another key
// on 429s, refused keys, provider failures and broken connections. Give
// it to any OpenAI-compatible client as its http.Client's Transport.
//
// The caller's request is never modified. A successful response holds
// its key's in-flight slot until its body is read to the end or closed,
// so a stream counts against MaxConcurrent for as long as it runs.
type Transport struct {
	pool         *Pool
	base         http.RoundTripper
	auth         AuthStyle
	maxAttempts  int
	maxBodyBytes int64
	classifier   func(*http.Response, error, Outcome) Outcome
	retryOnReset bool
	newBackOff   func() backoff.BackOff

	firstTokenTimeout time.Duration
	budget            *retryBudget
	responseHeaders   bool
}

// NewTransport returns a Transport that sends requests with keys from p.
// It panics if p is nil or an option cannot use its value; see Option.
func NewTransport(p *Pool, opts ...TransportOption) *Transport {
	if p == nil {
		panic(invalid("NewTransport", "nil Pool"))
	}
	t := &Transport{
		pool:         p,
		base:         http.DefaultTransport,
		maxAttempts:  5,
		maxBodyBytes: 32 << 20,
		retryOnReset: true,
		newBackOff:   defaultBackOff,
		budget:       newRetryBudget(0.2, 1),

		responseHeaders: true,
	}
	for _, o := range opts {
		if err := o(t); err != nil {
			panic(err)
		}
	}
	return t
}

// CloseIdleConnections closes the base transport's idle connections, if
// it has that method.
func (t *Transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// attemptsCeiling bounds all the attempts of one request, 429s included,
// as a multiple of WithMaxAttempts: 429s are not counted against
// WithMaxAttempts, since each one makes the next attempt wait for
// capacity, but they must not go on for ever either.
const attemptsCeiling = 4

// RoundTrip sends req with a key from the pool, retrying as the decision
// table in the package documentation says. When attempts run out it
// returns the last upstream response, so clients report the upstream's
// own error; it returns an *AttemptsError only when there is no response
// to return.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var c call
	if err := c.init(t, req); err != nil {
		return nil, err
	}
	resp, err := c.run()
	if resp != nil && t.responseHeaders && c.servedBy != nil {
		label(resp, c.servedBy, c.made)
	}
	if c.observed {
		c.finished(resp, err)
	}
	return resp, err
}

// run makes the request's attempts until one is handed over or none
// may follow.
func (c *call) run() (*http.Response, error) {
	for {
		l, err := c.acquire()
		if err != nil {
			if c.redirect && errors.Is(err, ErrNoKeyAvailable) {
				return c.sendWithoutKey()
			}
			return c.giveUp(nil, err)
		}
		a := c.attempt(l)
		c.made++
		if c.observed {
			c.attempted(&a)
		}
		switch {
		case a.callerFault != nil:
			return nil, c.fail(&a)
		case a.outcome.Retry == RetryNo && a.resp != nil:
			return c.handOver(&a), nil
		case a.outcome.Retry == RetryNo, c.spent(&a):
			return c.giveUp(&a, a.err)
		}
		c.keep(&a)
		if !c.pause(&a) {
			return c.giveUp(nil, c.pauseEnded(&a))
		}
	}
}

// call is one request on its way through the transport: what every
// attempt needs, and what the attempts so far have left.
type call struct {
	t        *Transport
	req      *http.Request
	ctx      context.Context
	body     replayBody
	need     acquireRequest
	redirect bool // req follows a redirect: no rebasing, stricter hosts

	attempts []Attempt
	last     *http.Response // the latest upstream answer, buffered
	charged  int            // attempts that count against maxAttempts
	// otherTier is set when the next attempt can go at once to a tier
	// where the request has not failed: another provider.
	otherTier bool
	renamed   []modelBody // the body with the model renamed, per name
	// observed is set when the pool has observers: only then are
	// attempts timed and described.
	observed bool
	start    time.Time     // of the call, when observed
	waited   time.Duration // for the key of the attempt under way
	// servedBy is the key whose answer is returned; lastKey that of last.
	servedBy, lastKey *keyState
	made              int           // attempts made
	handedOver        Attempt       // the attempt whose answer was handed over, if any
	waitLeft          time.Duration // of the pool's maximum wait
	bo                backoff.BackOff
}

// init checks req and prepares its body. On error the body is closed.
func (c *call) init(t *Transport, req *http.Request) error {
	if err := checkRequest(req); err != nil {
		closeRequestBody(req)
		return err
	}
	c.t, c.req, c.ctx = t, req, req.Context()
	if err := c.body.init(req, t.maxBodyBytes); err != nil {
		return err
	}
	c.redirect = req.Response != nil
	c.need.origin = req.URL
	if c.redirect {
		// A secret may follow a redirect only to where it belongs.
		c.need.origin, c.need.dest = originURL(req), req.URL
	}
	c.readModel(t.pool.snap.Load())
	c.waitLeft = t.pool.cfg.maxWait
	now := t.pool.clock.Now()
	t.budget.request(now)
	if c.observed = t.pool.observers.Load() != nil; c.observed {
		c.start = now
	}
	return nil
}

// acquire takes a key for the next attempt, waiting at most what is left
// of the pool's maximum wait. No attempt starts once the caller's
// context is done.
func (c *call) acquire() (*lease, error) {
	for {
		if err := c.ctx.Err(); err != nil {
			return nil, err
		}
		l, waited, err := c.t.pool.acquire(c.ctx, &c.need, c.waitLeft)
		c.waitLeft -= waited
		c.waited += waited
		if err != nil || c.t.pool.shared == nil || c.t.pool.shared.confirm(c.ctx, l) {
			return l, err
		}
		// Other replicas hold the slot, or the store knows a block this
		// process did not: the pool now passes that over. Try again.
		l.release()
	}
}

// spent reports whether a, which asks to be retried, must be the last
// attempt: attempts have run out, or the retry budget has.
func (c *call) spent(a *attempt) bool {
	// 429s are not charged: each one lowers a limit or cools an account
	// down, so the next attempt waits for capacity instead.
	if a.outcome.Effect != EffectRateLimited {
		c.charged++
	}
	now := c.t.pool.clock.Now()
	if a.outcome.Effect == EffectFailure {
		c.need.failedOnTier(a.lease.key)
	}
	c.otherTier = c.t.pool.snap.Load().anotherTierCanServe(&c.need, now)
	n := len(c.attempts) + 1
	if c.charged >= c.t.maxAttempts || n/attemptsCeiling >= c.t.maxAttempts { // n >= ceiling·max, without overflow
		return true
	}
	// Retries after provider failures come out of the retry budget, so
	// that an outage is not multiplied into a retry storm; a retry on
	// another provider does not add to the storm.
	if a.outcome.Effect == EffectFailure && !c.otherTier && !c.t.budget.allow(now) {
		if c.observed {
			c.t.pool.emitRetryRefused(RetryRefusedEvent{Key: a.lease.key.name, Status: a.status(), Err: a.err})
		}
		return true
	}
	return false
}

// keep records a, an attempt to be retried, and lets go of its key,
// keeping its answer should no later attempt get one.
func (c *call) keep(a *attempt) {
	c.record(a)
	if a.resp != nil {
		c.last = keepForLater(a.resp, a.lease, c.req)
	}
	a.lease.release()
	c.need.tried = append(c.need.tried, a.lease.key)
	if a.resp != nil {
		c.lastKey = a.lease.key
	}
	c.waited = 0
}

func (c *call) record(a *attempt) { c.attempts = append(c.attempts, a.asRecorded()) }

// asRecorded is a as Attempt lists it.
func (a *attempt) asRecorded() Attempt {
	at := Attempt{Key: a.lease.key.name, Err: a.err}
	if a.resp != nil {
		at.Status = a.resp.StatusCode
	}
	return at
}

// pause waits before the next attempt when a asks for a backoff, and
// reports whether the next attempt may go ahead. The backoff counts
// against the pool's maximum wait.
func (c *call) pause(a *attempt) bool {
	if a.outcome.Retry != RetryBackoff || c.otherTier {
		return true // another provider need not wait for this one
	}
	if c.bo == nil {
		c.bo = c.t.newBackOff()
	}
	d := c.bo.NextBackOff()
	if d == backoff.Stop || d > c.waitLeft {
		return false
	}
	c.waitLeft -= d
	return sleep(c.t.pool.clock, d, c.ctx.Done())
}

// pauseEnded is why no attempt follows a after pause said no.
func (c *call) pauseEnded(a *attempt) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	if a.err != nil {
		return a.err
	}
	return &WaitError{Err: ErrWaitTimeout}
}

// giveUp ends a request that gets no further attempt, for reason: it
// hands over a's answer if it has one, else the last answer kept, and
// else returns an *AttemptsError.
//
// An answer handed back this way carries "X-Should-Retry: false":
// keypool has spent its own attempts, and a client that retries on its
// own (openai-go, anthropic-sdk-go) would multiply them.
func (c *call) giveUp(a *attempt, reason error) (*http.Response, error) {
	if a != nil && a.resp != nil {
		a.resp.Header.Set("X-Should-Retry", "false")
		return c.handOver(a), nil
	}
	if a != nil {
		c.record(a)
		a.lease.release()
	}
	c.body.close()
	if c.last != nil && c.ctx.Err() == nil {
		c.last.Header.Set("X-Should-Retry", "false")
		c.servedBy = c.lastKey
		return c.last, nil
	}
	if err := c.ctx.Err(); err != nil {
		reason = err
	}
	return nil, &AttemptsError{Attempts: c.attempts, Err: reason}
}

// fail ends a request whose attempt failed through the caller's own
// doing: its context ended or its body could not be read. No key is
// blamed and nothing is retried.
func (c *call) fail(a *attempt) error {
	a.err = a.callerFault
	c.record(a)
	a.lease.release()
	c.body.close()
	return &AttemptsError{Attempts: c.attempts, Err: a.callerFault}
}

// sendWithoutKey follows a redirect to a place no key belongs to: the
// request goes on without any credential.
func (c *call) sendWithoutKey() (*http.Response, error) {
	resp, _, err := c.t.send(c, nil)
	if resp != nil {
		resp.Request = c.req
	}
	return resp, err
}
