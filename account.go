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
	// take claims one in-flight slot and the request's rate tokens and
	// returns how many requests are in flight with it. When it cannot, it
	// returns 0 and the time the tokens will be there, or the zero time if
	// only the slots are full.
	take(now time.Time, tokens int) (inFlight int64, readyAt time.Time)
	// put returns a slot claimed by take.
	put()
	coolDown(now time.Time, d time.Duration)
	// rateLimited counts a 429 and returns how many came in a row.
	rateLimited() int32
	// succeeded records a success sent with inFlight requests in flight.
	succeeded(inFlight int64)
	// overloaded records a 429 without a retry hint sent with inFlight
	// requests in flight, and reports whether the in-flight limit took it
	// (false: cool the account down instead).
	overloaded(inFlight int64) bool
	// settleTokens corrects a TPM reservation once the usage is known.
	settleTokens(now time.Time, reserved, used int)
	// resync lowers the RPM and TPM buckets to what the provider says
	// remains; a negative count means it did not say.
	resync(now time.Time, remainingRequests, remainingTokens int)
	// hasRates reports whether the account has RPM or TPM limits.
	hasRates() bool
	// setLimits changes the account's limits on a live pool.
	setLimits(now time.Time, lim Limits)
	disable(until int64)
	enable()
	inFlight() int64
	limit() int
	cooldownUntil() int64
	disabledUntil() int64
}

// localAccount keeps an account's state in this process.
type localAccount struct {
	fixed    atomic.Int64   // the in-flight limit when not adaptive; 0 means none
	adaptive *adaptiveLimit // nil when adaptive limits are off
	inflight atomic.Int64
	rpm      atomic.Pointer[rate.Limiter] // nil means no limit
	tpm      atomic.Pointer[tokenBucket]  // nil means no limit

	coolUntil    atomic.Int64 // unix nanoseconds
	offUntil     atomic.Int64 // unix nanoseconds
	limitedInRow atomic.Int32
}

func newLocalAccount(lim Limits, adaptive bool, now time.Time) *localAccount {
	a := &localAccount{}
	a.fixed.Store(int64(lim.MaxConcurrent))
	if adaptive {
		a.adaptive = newAdaptiveLimit(lim.MaxConcurrent)
	}
	a.setRates(now, lim)
	return a
}

// setRates sizes the buckets. Providers refill their request and token
// buckets continuously up to the per-minute figure, so a bucket holds a
// minute's worth.
func (a *localAccount) setRates(now time.Time, lim Limits) {
	switch rpm := a.rpm.Load(); {
	case lim.RPM == 0:
		a.rpm.Store(nil)
	case rpm == nil:
		rpm = rate.NewLimiter(rate.Limit(float64(lim.RPM)/60), lim.RPM)
		rpm.AllowN(now, 0) // start the bucket's clock at now, full
		a.rpm.Store(rpm)
	default:
		rpm.SetLimitAt(now, rate.Limit(float64(lim.RPM)/60))
		rpm.SetBurstAt(now, lim.RPM)
	}
	switch tpm := a.tpm.Load(); {
	case lim.TPM == 0:
		a.tpm.Store(nil)
	case tpm == nil || tpm.capacity != float64(lim.TPM):
		a.tpm.Store(newTokenBucket(lim.TPM, now))
	}
}

func (a *localAccount) hasRates() bool { return a.rpm.Load() != nil || a.tpm.Load() != nil }

func (a *localAccount) setLimits(now time.Time, lim Limits) {
	a.fixed.Store(int64(lim.MaxConcurrent))
	if a.adaptive != nil {
		a.adaptive.setCeiling(lim.MaxConcurrent)
	}
	a.setRates(now, lim)
}

func (a *localAccount) maxInFlight() int64 {
	if a.adaptive != nil {
		return a.adaptive.get()
	}
	return a.fixed.Load()
}

func (a *localAccount) take(now time.Time, tokens int) (int64, time.Time) {
	limit := a.maxInFlight()
	var n int64
	for {
		n = a.inflight.Load()
		if limit > 0 && n >= limit {
			return 0, time.Time{}
		}
		if a.inflight.CompareAndSwap(n, n+1) {
			break
		}
	}
	if at := a.takeTokens(now, tokens); !at.IsZero() {
		a.inflight.Add(-1)
		return 0, at
	}
	return n + 1, time.Time{}
}

// takeTokens takes one request token and the request's tokens, or takes
// nothing and returns when they will be there.
func (a *localAccount) takeTokens(now time.Time, tokens int) time.Time {
	rpm, tpm := a.rpm.Load(), a.tpm.Load()
	if rpm != nil {
		// Look first, so that a refusal takes nothing.
		if have := rpm.TokensAt(now); have < 1 {
			d := time.Duration(math.Ceil((1 - have) / float64(rpm.Limit()) * float64(time.Second)))
			return now.Add(max(d, time.Millisecond))
		}
	}
	if tpm != nil && tokens > 0 {
		if ok, at := tpm.take(now, tokens); !ok {
			return at
		}
	}
	if rpm != nil && !rpm.AllowN(now, 1) {
		// Another request took the last token since: give the TPM back
		// and try again soon.
		if tpm != nil && tokens > 0 {
			tpm.adjust(now, tokens)
		}
		return now.Add(time.Millisecond)
	}
	return time.Time{}
}

func (a *localAccount) put()            { a.inflight.Add(-1) }
func (a *localAccount) inFlight() int64 { return a.inflight.Load() }
func (a *localAccount) limit() int      { return int(a.maxInFlight()) }

func (a *localAccount) coolDown(now time.Time, d time.Duration) {
	storeLater(&a.coolUntil, addNanos(now.UnixNano(), d))
}

func (a *localAccount) rateLimited() int32 { return a.limitedInRow.Add(1) }

func (a *localAccount) succeeded(inFlight int64) {
	if a.limitedInRow.Load() != 0 {
		a.limitedInRow.Store(0)
	}
	if a.adaptive != nil {
		a.adaptive.succeeded(inFlight)
	}
}

func (a *localAccount) overloaded(inFlight int64) bool {
	return a.adaptive != nil && a.adaptive.overloaded(inFlight)
}

func (a *localAccount) settleTokens(now time.Time, reserved, used int) {
	if tpm := a.tpm.Load(); tpm != nil && used != reserved {
		tpm.adjust(now, reserved-used)
	}
}

func (a *localAccount) resync(now time.Time, remainingRequests, remainingTokens int) {
	if tpm := a.tpm.Load(); tpm != nil && remainingTokens >= 0 {
		tpm.lowerTo(now, remainingTokens)
	}
	if rpm := a.rpm.Load(); rpm != nil && remainingRequests >= 0 {
		if extra := int(rpm.TokensAt(now)) - remainingRequests; extra > 0 {
			rpm.ReserveN(now, extra) // consumed, never cancelled
		}
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
