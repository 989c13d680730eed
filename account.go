package keypool

import (
	"math"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// accountState is the state that the keys of one account share: in-flight
// slots, rate tokens, cooldown and billing. It is an interface so that a
// store shared by many replicas (Redis) can hold it instead of memory.
type accountState interface {
	// take claims one in-flight slot and the request's rate tokens. When
	// it cannot, it returns ok == false and the time the tokens will be
	// there, or the zero time if only the slots are full.
	take(now time.Time, tokens int) (ok bool, readyAt time.Time)
	// put returns a slot claimed by take.
	put()
	// blockedUntil is the end of the account's cooldown or disablement, or
	// the zero time.
	blockedUntil() int64
	coolDown(now time.Time, d time.Duration)
	// rateLimited counts a 429 and returns how many came in a row.
	rateLimited() int32
	succeeded()
	disable(until int64)
	enable()
	inFlight() int64
	limit() int
	cooldownUntil() int64
	disabledUntil() int64
}

// localAccount keeps an account's state in this process.
type localAccount struct {
	name        string
	maxInFlight int64 // 0 means no limit
	inflight    atomic.Int64
	rpm, tpm    *rate.Limiter // nil means no limit

	coolUntil    atomic.Int64 // unix nanoseconds
	offUntil     atomic.Int64 // unix nanoseconds
	limitedInRow atomic.Int32
}

func newLocalAccount(name string, lim accountLimits, now time.Time) *localAccount {
	a := &localAccount{name: name, maxInFlight: int64(lim.MaxConcurrent)}
	// Providers refill their request and token buckets continuously up to
	// the per-minute figure, so the bucket holds a minute's worth.
	if lim.RPM > 0 {
		a.rpm = rate.NewLimiter(rate.Limit(float64(lim.RPM)/60), lim.RPM)
		a.rpm.AllowN(now, 0) // start the bucket's clock at now, full
	}
	if lim.TPM > 0 {
		a.tpm = rate.NewLimiter(rate.Limit(float64(lim.TPM)/60), lim.TPM)
		a.tpm.AllowN(now, 0)
	}
	return a
}

func (a *localAccount) take(now time.Time, tokens int) (bool, time.Time) {
	for {
		n := a.inflight.Load()
		if a.maxInFlight > 0 && n >= a.maxInFlight {
			return false, time.Time{}
		}
		if a.inflight.CompareAndSwap(n, n+1) {
			break
		}
	}
	if at := a.takeTokens(now, tokens); !at.IsZero() {
		a.inflight.Add(-1)
		return false, at
	}
	return true, time.Time{}
}

// takeTokens takes one request token and the request's tokens, or takes
// nothing and returns when they will be there.
func (a *localAccount) takeTokens(now time.Time, tokens int) time.Time {
	if a.rpm == nil && (a.tpm == nil || tokens <= 0) {
		return time.Time{}
	}
	if a.tpm != nil {
		tokens = min(tokens, a.tpm.Burst()) // more could never be granted
	}
	// Look first, so that a refusal takes nothing from either bucket.
	if a.rpm != nil {
		if have := a.rpm.TokensAt(now); have < 1 {
			return readyAt(now, 1-have, a.rpm.Limit())
		}
	}
	if a.tpm != nil && tokens > 0 {
		if have := a.tpm.TokensAt(now); have < float64(tokens) {
			return readyAt(now, float64(tokens)-have, a.tpm.Limit())
		}
	}
	// Another request may have taken the tokens since; then try again soon.
	if a.rpm != nil && !a.rpm.AllowN(now, 1) {
		return now.Add(time.Millisecond)
	}
	if a.tpm != nil && tokens > 0 && !a.tpm.AllowN(now, tokens) {
		return now.Add(time.Millisecond)
	}
	return time.Time{}
}

func readyAt(now time.Time, missing float64, per rate.Limit) time.Time {
	d := time.Duration(math.Ceil(missing / float64(per) * float64(time.Second)))
	return now.Add(max(d, time.Millisecond))
}

func (a *localAccount) put()            { a.inflight.Add(-1) }
func (a *localAccount) inFlight() int64 { return a.inflight.Load() }
func (a *localAccount) limit() int      { return int(a.maxInFlight) }

func (a *localAccount) blockedUntil() int64 {
	return max(a.coolUntil.Load(), a.offUntil.Load())
}

func (a *localAccount) coolDown(now time.Time, d time.Duration) {
	storeLater(&a.coolUntil, now.Add(d).UnixNano())
}

func (a *localAccount) rateLimited() int32 { return a.limitedInRow.Add(1) }

func (a *localAccount) succeeded() {
	if a.limitedInRow.Load() != 0 {
		a.limitedInRow.Store(0)
	}
}

func (a *localAccount) disable(until int64) { storeLater(&a.offUntil, until) }

func (a *localAccount) enable() {
	a.offUntil.Store(0)
	a.coolUntil.Store(0)
	a.limitedInRow.Store(0)
}

func (a *localAccount) cooldownUntil() int64 { return a.coolUntil.Load() }
func (a *localAccount) disabledUntil() int64 { return a.offUntil.Load() }

// storeLater sets *v to t unless it already holds a later time.
func storeLater(v *atomic.Int64, t int64) {
	for {
		old := v.Load()
		if old >= t || v.CompareAndSwap(old, t) {
			return
		}
	}
}
