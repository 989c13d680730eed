package keypool

import (
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Observer receives what a pool does as it happens: every attempt, every
// change of a key's or account's state, every change of a learned limit,
// every retry the retry budget refused, and every request as it ends.
// Logs and metrics are built on it (WithLogger; package keypoolprom).
//
// Each field is optional: set the ones you need. Observer is a struct of
// functions, as net/http/httptrace.ClientTrace is, rather than an
// interface, so that an observer of one kind of event is one line, and so
// that new kinds of event can be added without breaking existing
// observers.
//
// # What blocks what
//
// The functions are called synchronously, on the goroutine whose request
// (or whose call of a Pool method, such as Disable) caused the event,
// after the change was made and with no keypool lock held. A slow
// observer therefore delays that one request (and keeps the key it holds
// busy meanwhile), but never the selection of keys for other requests,
// the queue of waiting requests, or other observers' calls from other
// requests. Functions are called from many goroutines at once and must be
// safe for concurrent use. They may call the pool's methods (Stats,
// Disable, ...). They must not keep the events' slices, which are shared.
type Observer struct {
	// Attempt is called when an attempt has been judged: its answer
	// classified and its effect applied, before the request goes on.
	Attempt func(AttemptEvent)
	// State is called when a key, its account or one of its model
	// mappings changes state.
	State func(StateEvent)
	// Limit is called when an account's learned in-flight limit changes.
	Limit func(LimitEvent)
	// RetryRefused is called when the retry budget (WithRetryBudget)
	// refuses a retry after a provider failure: the caller gets the
	// failed answer.
	RetryRefused func(RetryRefusedEvent)
	// Request is called once per request that reached the pool, as the
	// transport returns: with the response handed over (its body still
	// to be read) or the error.
	Request func(RequestEvent)
}

// AttemptEvent is one attempt of a request on one key.
type AttemptEvent struct {
	Key      string // the key's Name
	Account  string // the key's Account, "" if it stands alone
	Priority int    // the key's Priority
	// Number counts the request's attempts, from 1.
	Number int
	// Status is the upstream's HTTP status, 0 if no answer came.
	Status int
	// Err is the transport error, or why a 2xx answer was refused (an
	// empty answer, a stream with no content in time); nil otherwise.
	Err error
	// Outcome is the verdict: what the answer means for the key and
	// whether the request is retried.
	Outcome Outcome
	// ByCaller is set when the attempt failed through the caller's own
	// doing (its context ended, its body failed): no key was blamed.
	ByCaller bool
	// Waited is how long the request waited for this key; Took how long
	// the upstream took to answer (to the response headers), or to fail.
	Waited, Took time.Duration
}

// StateEvent is a change of a key's state, or of its account's (every key
// of the account gets one), or of one of its model mappings.
type StateEvent struct {
	Key      string // the key's Name
	Account  string // the key's Account, "" if it stands alone
	Priority int
	// At is when the change happened.
	At time.Time
	// State is the key's state now.
	State State
	// Until is when a cooldown, a disablement or an ejection ends (for an
	// ejected key: its next probe); zero for other states, and far in the
	// future after Disable.
	Until time.Time
	// Cause says why, as "401 invalid_api_key", "5 failures in a row, the
	// last 503", "Disable", "answered its probe". It never holds a secret.
	Cause string
	// Model, when set, is a model the key stops serving (its provider
	// answered that the key's ModelMap name for it does not exist): the
	// key itself works, State is StateDisabled for that model alone.
	Model string
}

// LimitEvent is a change of an account's learned in-flight limit.
type LimitEvent struct {
	Key      string // the key whose answer changed it
	Account  string // the key's Account, "" if it stands alone
	From, To int
	// OverloadLevel is the number in flight at which the account last
	// answered a 429 that a cap explains; 0 if none is known.
	OverloadLevel int
}

// RetryRefusedEvent is a retry the retry budget refused.
type RetryRefusedEvent struct {
	Key    string // the key whose attempt failed
	Status int    // its status, 0 if no answer came
	Err    error  // its transport error, if any
}

// RequestEvent is a request as the transport returns it.
type RequestEvent struct {
	Method string
	Path   string // the URL's path; the query is left out
	Model  string // the body's model, when the pool read it
	// Key is the key whose answer is returned, "" if none is.
	Key string
	// Status is the returned response's status, 0 with an error.
	Status int
	Err    error
	// Attempts lists every attempt made, in order.
	Attempts []Attempt
	// Waited is the time spent waiting for keys and backing off, over
	// every attempt; Took the time from the call to the return.
	Waited, Took time.Duration
}

// WithObserver adds an observer of the pool's events. It may be given
// more than once; observers are called in the order given.
func WithObserver(o Observer) Option {
	return func(c *poolConfig) error {
		c.observers = append(c.observers, o)
		return nil
	}
}

// AddObserver adds an observer to a pool that already serves, as
// packages that watch a pool built elsewhere do (keypoolprom). Events
// that happen while it is added may or may not reach it.
func (p *Pool) AddObserver(o Observer) {
	p.observeMu.Lock()
	defer p.observeMu.Unlock()
	var list []Observer
	if old := p.observers.Load(); old != nil {
		list = slices.Clone(*old)
	}
	list = append(list, o)
	p.observers.Store(&list)
}

// observers holds a pool's observers; nil when it has none, so that an
// unobserved pool pays one atomic load per request.
type observers = atomic.Pointer[[]Observer]

// observed returns the pool's observers, nil if none.
func (p *Pool) observed() []Observer {
	if list := p.observers.Load(); list != nil {
		return *list
	}
	return nil
}

func (p *Pool) emitState(e StateEvent) {
	for _, o := range p.observed() {
		if o.State != nil {
			o.State(e)
		}
	}
}

func (p *Pool) emitLimit(e LimitEvent) {
	for _, o := range p.observed() {
		if o.Limit != nil {
			o.Limit(e)
		}
	}
}

func (p *Pool) emitAttempt(e AttemptEvent) {
	for _, o := range p.observed() {
		if o.Attempt != nil {
			o.Attempt(e)
		}
	}
}

func (p *Pool) emitRetryRefused(e RetryRefusedEvent) {
	for _, o := range p.observed() {
		if o.RetryRefused != nil {
			o.RetryRefused(e)
		}
	}
}

func (p *Pool) emitRequest(e RequestEvent) {
	for _, o := range p.observed() {
		if o.Request != nil {
			o.Request(e)
		}
	}
}

// observerState is what a Pool keeps of its observers.
type observerState struct {
	observers observers
	observeMu sync.Mutex // serializes AddObserver
}

// changed tells observers of a change of k's state; e holds the change,
// changed fills in the key.
func (p *Pool) changed(k *keyState, e StateEvent) {
	if p.observers.Load() == nil {
		return
	}
	e.Key, e.Account, e.Priority, e.At = k.name, k.cfg.Account, k.cfg.Priority, p.clock.Now()
	if e.Cause == "" {
		e.Cause = "unknown cause"
	}
	p.emitState(e)
}

// accountChanged tells observers of a change of the state of k's
// account, once for each of its keys.
func (p *Pool) accountChanged(k *keyState, e StateEvent) {
	if p.observers.Load() == nil {
		return
	}
	if k.cfg.Account == "" {
		p.changed(k, e)
		return
	}
	for _, other := range p.snap.Load().keys {
		if other.account == k.account {
			p.changed(other, e)
		}
	}
}

// limitChanged tells observers that k's account's learned limit is no
// longer before.
func (p *Pool) limitChanged(k *keyState, before int64) {
	if p.observers.Load() == nil || k.account.slots.learned == nil {
		return
	}
	if after := k.account.slots.limit(); after != before {
		p.emitLimit(LimitEvent{Key: k.name, Account: k.cfg.Account, From: int(before), To: int(after),
			OverloadLevel: int(k.account.slots.learned.state().level)})
	}
}

// attempted tells observers of a, the attempt just judged.
func (c *call) attempted(a *attempt) {
	k := a.lease.key
	e := AttemptEvent{
		Key: k.name, Account: k.cfg.Account, Priority: k.cfg.Priority,
		Number: len(c.attempts) + 1, Status: a.status(), Err: a.err, Outcome: a.outcome,
		Waited: c.waited, Took: a.took,
	}
	if a.callerFault != nil {
		e.Err, e.ByCaller = a.callerFault, true
	}
	c.t.pool.emitAttempt(e)
}

// finished tells observers of the request's end: resp or err is what
// the transport returns.
func (c *call) finished(resp *http.Response, err error) {
	e := RequestEvent{
		Method: c.req.Method, Path: c.req.URL.Path, Model: c.need.model, Err: err,
		Attempts: c.attempts, Waited: c.t.pool.cfg.maxWait - c.waitLeft, Took: c.t.pool.clock.Now().Sub(c.start),
	}
	if c.handedOver.Key != "" {
		e.Attempts = append(e.Attempts[:len(e.Attempts):len(e.Attempts)], c.handedOver)
	}
	if resp != nil {
		e.Status = resp.StatusCode
	}
	if c.servedBy != nil {
		e.Key = c.servedBy.name
	}
	c.t.pool.emitRequest(e)
}
