package keypool

import "time"

// A key that fails WithEjection's number of times in a row is ejected:
// it serves nothing until its ejection ends, but for a probe every
// cooldown (WithCooldown), one request that tells whether its provider
// is back. The first probe that gets an answer ends the ejection, so
// that traffic returns within a cooldown of a provider's recovery rather
// than a whole ejection later; the failed ones cost a retry on another
// key, or on another tier.

// eject takes k out of rotation until until, and arms its first probe
// after gap. It returns when the first probe is due.
func (k *keyState) eject(now time.Time, until int64, gap time.Duration) int64 {
	k.proven.Store(false)
	g := min(int64(gap), until-now.UnixNano())
	k.probeGap.Store(g)
	first := addNanos(now.UnixNano(), time.Duration(g))
	k.probeAt.Store(first)
	storeLater(&k.ejectedUntil, until)
	return first
}

// probeOpen reports whether k, which is disabled or ejected, is only
// ejected and due for a probe.
func (k *keyState) probeOpen(ns int64) bool {
	at := k.probeAt.Load()
	return at != 0 && at <= ns &&
		k.ejectedUntil.Load() > ns &&
		max(k.offUntil.Load(), k.account.standing.disabledUntil()) <= ns
}

// claimProbe makes the caller the one request that probes k now, and
// sets the next probe a gap later.
func (k *keyState) claimProbe(ns int64) bool {
	at := k.probeAt.Load()
	return at != 0 && at <= ns && k.probeAt.CompareAndSwap(at, addNanos(ns, time.Duration(k.probeGap.Load())))
}

// nextProbe is when k, if it is only ejected, is next probed; far in
// the future otherwise.
func (k *keyState) nextProbe(ns int64) int64 {
	at := k.probeAt.Load()
	if at == 0 || k.ejectedUntil.Load() <= ns || max(k.offUntil.Load(), k.account.standing.disabledUntil()) > ns {
		return disabledForever
	}
	return at
}

// recovered ends k's ejection, once a request got an answer from it,
// and reports whether k was ejected.
func (k *keyState) recovered() bool {
	if k.ejectedUntil.Load() == 0 {
		return false
	}
	k.ejectedUntil.Store(0)
	k.probeAt.Store(0)
	return true
}
