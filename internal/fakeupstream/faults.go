package fakeupstream

import (
	"math"
	"net/http"
	"strconv"
	"time"
)

// keyFaultLocked decides what a key's permanent fault makes of a
// request; ok is false when the key has no fault that refuses it. An
// unknown key is refused as a revoked one.
func (s *Server) keyFaultLocked(key Key, known bool, c *Counters) (d decision, ok bool) {
	if !known || key.Fault == FaultRevoked {
		c.Unauthorized++
		return refusal(http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "Incorrect API key provided"), true
	}
	switch key.Fault {
	case FaultForbidden:
		c.Unauthorized++
		return refusal(http.StatusForbidden, "permission_error", "forbidden", "Forbidden"), true
	case FaultNoBalance:
		c.NoBalance++
		return refusal(http.StatusPaymentRequired, "unknown_error", "invalid_request_error", "Insufficient Balance"), true
	case FaultQuota:
		c.QuotaErrors++
		return refusal(http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota",
			"You exceeded your current quota, please check your plan and billing details."), true
	case FaultRateLimited:
		c.RateLimited++
		d = refusal(http.StatusTooManyRequests, "requests", "rate_limit_exceeded", "Rate limit reached")
		d.header = http.Header{"Retry-After": {"1"}}
		return d, true
	case FaultServerError:
		c.ServerErrors++
		return refusal(http.StatusInternalServerError, "server_error", "internal_error", "internal error"), true
	case FaultGarbage:
		c.ServerErrors++
		return decision{kind: answerGarbage, garbage: s.garbageLocked(256 << 10)}, true
	case FaultResetAfterHeaders:
		c.Resets++
		return decision{kind: answerResetAfterHeaders}, true
	}
	return decision{}, false
}

// garbageLocked returns n random bytes.
func (s *Server) garbageLocked(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(s.rng.Uint32())
	}
	return b
}

// outageLocked decides what an outage of the account, if one is on now,
// makes of a request: a reset when the outage has no status, else an
// error with its status.
func (s *Server) outageLocked(account string, c *Counters) (decision, bool) {
	o, on := s.outageNowLocked(account)
	if !on {
		return decision{}, false
	}
	if o.Status == 0 {
		c.Resets++
		return decision{kind: answerReset}, true
	}
	c.countStatus(o.Status)
	d := refusal(o.Status, "server_error", "outage", "The server is temporarily unavailable")
	if o.Status == http.StatusTooManyRequests {
		d.err.errType, d.err.code, d.err.message = "requests", "rate_limit_exceeded", "Rate limit reached"
	}
	if o.RetryAfter > 0 {
		d.header = http.Header{"Retry-After": {ceilSeconds(o.RetryAfter)}}
	}
	return d, true
}

// outageNowLocked returns the first outage of the account, or of every
// account, that is on now.
func (s *Server) outageNowLocked(account string) (Outage, bool) {
	since := time.Since(s.start)
	for _, o := range s.cfg.Outages {
		if (o.Account == "" || o.Account == account) && since >= o.Start && since < o.End {
			return o, true
		}
	}
	return Outage{}, false
}

// bareRateLimit is DeepSeek's 429: no Retry-After, no rate-limit headers.
func bareRateLimit(message string) decision {
	return refusal(http.StatusTooManyRequests, "rate_limit_reached_error", "rate_limit_reached", message)
}

// ceilSeconds writes d in whole seconds, rounded up, as Retry-After
// wants them.
func ceilSeconds(d time.Duration) string {
	return strconv.Itoa(int(math.Ceil(d.Seconds())))
}

// randomFaultLocked draws the random faults, in order, and decides the
// first that strikes. A rate of 0 draws nothing, so that turning one
// fault on leaves the draws of the others as they were.
func (s *Server) randomFaultLocked(c *Counters) (decision, bool) {
	switch {
	case s.chanceLocked(s.cfg.ResetRate):
		c.Resets++
		return decision{kind: answerReset}, true
	case s.chanceLocked(s.cfg.ErrorRate):
		c.ServerErrors++
		return refusal(http.StatusInternalServerError, "server_error", "internal_error",
			"The server had an error while processing your request"), true
	case s.chanceLocked(s.cfg.RateLimitRate):
		c.RateLimited++
		c.RandomRateLimited++
		return bareRateLimit("Rate limit reached"), true
	case s.chanceLocked(s.cfg.OverloadedRate):
		c.ServerErrors++
		c.Overloaded++
		return refusal(StatusOverloaded, "overloaded_error", "overloaded", "Overloaded"), true
	}
	return decision{}, false
}

// chanceLocked reports whether an event of probability p happens, drawing
// from the random source only when p is positive.
func (s *Server) chanceLocked(p float64) bool {
	return p > 0 && s.rng.Float64() < p
}
