package keypool

import (
	"math"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// budgets are an account's request and token budgets: RPM and TPM.
// Providers refill them continuously up to the per-minute figure, so
// each holds a minute's worth.
type budgets struct {
	rpm atomic.Pointer[rate.Limiter] // nil means no limit
	tpm atomic.Pointer[tokenBucket]  // nil means no limit
}

// set sizes the budgets to lim, keeping what they hold where it can.
func (b *budgets) set(now time.Time, lim Limits) {
	switch rpm := b.rpm.Load(); {
	case lim.RPM == 0:
		b.rpm.Store(nil)
	case rpm == nil:
		rpm = rate.NewLimiter(rate.Limit(float64(lim.RPM)/60), lim.RPM)
		rpm.AllowN(now, 0) // start the bucket's clock at now, full
		b.rpm.Store(rpm)
	default:
		rpm.SetLimitAt(now, rate.Limit(float64(lim.RPM)/60))
		rpm.SetBurstAt(now, lim.RPM)
	}
	switch tpm := b.tpm.Load(); {
	case lim.TPM == 0:
		b.tpm.Store(nil)
	case tpm == nil || tpm.capacity != float64(lim.TPM):
		b.tpm.Store(newTokenBucket(lim.TPM, now))
	}
}

// has reports whether there is any budget to keep.
func (b *budgets) has() bool { return b.rpm.Load() != nil || b.tpm.Load() != nil }

// take takes one request and the request's tokens, or takes nothing and
// returns when they will be there.
func (b *budgets) take(now time.Time, tokens int) time.Time {
	rpm, tpm := b.rpm.Load(), b.tpm.Load()
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
		// Another request took the last one since: give the tokens back
		// and try again soon.
		if tpm != nil && tokens > 0 {
			tpm.adjust(now, tokens)
		}
		return now.Add(time.Millisecond)
	}
	return time.Time{}
}

// settle corrects a TPM reservation once the usage is known.
func (b *budgets) settle(now time.Time, reserved, used int) {
	if tpm := b.tpm.Load(); tpm != nil && used != reserved {
		tpm.adjust(now, reserved-used)
	}
}

// resync lowers the budgets to what the provider says remains; a
// negative count means it did not say.
func (b *budgets) resync(now time.Time, remainingRequests, remainingTokens int) {
	if tpm := b.tpm.Load(); tpm != nil && remainingTokens >= 0 {
		tpm.lowerTo(now, remainingTokens)
	}
	if rpm := b.rpm.Load(); rpm != nil && remainingRequests >= 0 {
		if extra := int(rpm.TokensAt(now)) - remainingRequests; extra > 0 {
			rpm.ReserveN(now, extra) // consumed, never cancelled
		}
	}
}
