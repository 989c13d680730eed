package fakeupstream

import (
	"fmt"
	"net/http"
	"sync"
	"time"
)

// answerKind is how a request is answered.
type answerKind int

const (
	answerOK                answerKind = iota // admitted: a completion
	answerError                               // an error status and body
	answerReset                               // the connection reset, no answer
	answerResetAfterHeaders                   // 200, a few bytes, then a reset
	answerGarbage                             // 502 with random bytes
)

// decision is the fate of one request.
type decision struct {
	kind    answerKind
	err     apiError    // for answerError
	header  http.Header // sent with the answer, whatever its kind
	latency time.Duration
	key     Key
	garbage []byte
}

// refusal is a decision to answer with an error.
func refusal(status int, errType, code, message string) decision {
	return decision{kind: answerError, err: apiError{status, errType, code, message}}
}

// admit decides a request's fate under the lock and, when it is
// admitted, claims its in-flight slot; release gives the slot back.
func (s *Server) admit(c *call) (d decision, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cnt := s.countsLocked(c.secret)
	cnt.countRequest(c.model, c.auth)
	key, known := s.cfg.Keys[c.secret]
	if d, refused := s.refuseLocked(c, key, known, cnt); refused {
		return d, func() {}
	}
	return s.admitAccountLocked(c, key, cnt)
}

// refuseLocked decides whether something other than the account's
// limits refuses the request, in this order: the key's permanent fault,
// an unknown model, an outage of its account, a random fault.
func (s *Server) refuseLocked(c *call, key Key, known bool, cnt *Counters) (decision, bool) {
	if d, ok := s.keyFaultLocked(key, known, cnt); ok {
		return d, true
	}
	if d, ok := s.unknownModelLocked(c.model, cnt); ok {
		return d, true
	}
	if d, ok := s.outageLocked(accountOf(c.secret, key), cnt); ok {
		return d, true
	}
	return s.randomFaultLocked(cnt)
}

// admitAccountLocked admits the request if its account's limits allow,
// as the mode says, and claims a slot for it.
func (s *Server) admitAccountLocked(c *call, key Key, cnt *Counters) (decision, func()) {
	a := s.accountLocked(accountOf(c.secret, key))
	var d decision
	var ok bool
	if s.cfg.Mode == DeepSeek {
		d, ok = admitInFlight(a, cnt)
	} else {
		d, ok = admitBuckets(a, c, cnt, time.Now())
	}
	if !ok {
		return d, func() {}
	}
	a.inflight++
	a.maxInFlight = max(a.maxInFlight, a.inflight)
	d.kind, d.latency, d.key = answerOK, s.latencyLocked(), key
	return d, s.releaser(a, cnt)
}

// admitInFlight is DeepSeek's admission: a request over the account's
// cap on requests in flight gets a 429 at once, with no Retry-After and
// no rate-limit headers.
func admitInFlight(a *accountState, c *Counters) (decision, bool) {
	if a.limits.MaxInFlight > 0 && a.inflight >= a.limits.MaxInFlight {
		c.RateLimited++
		return bareRateLimit(fmt.Sprintf("Rate limit reached: %d requests in flight", a.limits.MaxInFlight)), false
	}
	return decision{}, true
}

// admitBuckets is OpenAI's admission: the request takes one request from
// the account's RPM bucket and its tokens from the TPM bucket, or gets a
// 429 saying how long until they are there. Either way the answer
// carries the buckets' rate-limit headers.
func admitBuckets(a *accountState, c *call, cnt *Counters, now time.Time) (decision, bool) {
	okR, waitR := a.rpm.take(1, now)
	okT, waitT := true, time.Duration(0)
	if okR {
		okT, waitT = a.tpm.take(c.prompt+c.completion, now)
		if !okT {
			a.rpm.give(1)
		}
	}
	h := http.Header{}
	c.proto.limitHeaders(h, a, now)
	if okR && okT {
		return decision{header: h}, true
	}
	cnt.RateLimited++
	c.proto.retryHeaders(h, max(waitR, waitT))
	d := refusal(http.StatusTooManyRequests, "requests", "rate_limit_exceeded", "Rate limit reached for requests")
	d.header = h
	return d, false
}

// releaser returns the function that frees an admitted request's slot
// and adds its time to the key's Busy; only its first call counts.
func (s *Server) releaser(a *accountState, c *Counters) func() {
	start := time.Now()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			a.inflight--
			c.Busy += time.Since(start)
			s.mu.Unlock()
		})
	}
}

// latencyLocked draws how long a non-streamed answer takes.
func (s *Server) latencyLocked() time.Duration {
	d := s.cfg.Latency
	if s.cfg.Jitter > 0 {
		d += time.Duration(s.rng.Int64N(int64(s.cfg.Jitter)))
	}
	return d
}
