package keypool

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// report applies the outcome of the attempt made under l to its key and
// account: the state changes of the decision table.
func (p *Pool) report(l *lease, o Outcome, status int) {
	k := l.key
	switch o.Effect {
	case EffectOK:
		k.proven.Store(true)
		if k.failsInRow.Load() != 0 {
			k.failsInRow.Store(0)
		}
		if status >= 200 && status < 300 {
			k.successes.Add(1)
			k.account.succeeded(l.inFlight)
		} else {
			k.account.succeeded(0) // it answered, but says nothing of capacity
		}
	case EffectRateLimited:
		k.rateLimited.Add(1)
		k.proven.Store(true) // it answered: the key itself is good
		if o.Wait <= 0 && k.account.overloaded(l.inFlight) {
			return // a concurrency cap: the lowered limit is the remedy
		}
		inRow := k.account.rateLimited()
		d := o.Wait
		if d <= 0 {
			d = doubled(p.cfg.cooldown, int(min(inRow-1, 20)))
		}
		k.account.coolDown(p.clock.Now(), min(d, p.cfg.maxCooldown))
	case EffectKeyRevoked:
		k.failures.Add(1)
		k.proven.Store(false)
		storeLater(&k.offUntil, addNanos(p.clock.Now().UnixNano(), p.cfg.disableFor))
	case EffectAccountExhausted:
		k.failures.Add(1)
		k.account.disable(addNanos(p.clock.Now().UnixNano(), p.cfg.disableFor))
		for _, other := range p.snap.Load().keys {
			if other.account == k.account {
				other.proven.Store(false) // one probe when it comes back
			}
		}
	case EffectFailure:
		k.failures.Add(1)
		if k.failsInRow.Add(1) >= int32(p.cfg.ejectAfter) {
			k.failsInRow.Store(0)
			k.proven.Store(false)
			storeLater(&k.ejectedUntil, addNanos(p.clock.Now().UnixNano(), p.cfg.ejectFor))
		}
	}
}

// Disable takes the key with the given name out of rotation until Enable.
// Requests in flight on it finish normally.
func (p *Pool) Disable(name string) error {
	k, err := p.snap.Load().key(name)
	if err != nil {
		return err
	}
	k.offUntil.Store(disabledForever)
	return nil
}

// Enable puts the key with the given name back in rotation at once: it
// clears the key's disablement and ejection and its account's disablement
// and cooldown. Its next request probes it.
func (p *Pool) Enable(name string) error {
	k, err := p.snap.Load().key(name)
	if err != nil {
		return err
	}
	k.offUntil.Store(0)
	k.ejectedUntil.Store(0)
	k.failsInRow.Store(0)
	k.proven.Store(false) // probed again, one request at a time
	k.account.enable()
	p.wake()
	return nil
}

// resyncFromHeaders lowers the account's RPM and TPM buckets to what the
// provider says remains, so that its limits are kept before a 429 rather
// than learnt from one.
func resyncFromHeaders(resp *http.Response, k *keyState, now time.Time) {
	if !k.account.hasRates() {
		return
	}
	requests := headerInt(resp.Header, "X-Ratelimit-Remaining-Requests")
	tokens := headerInt(resp.Header, "X-Ratelimit-Remaining-Tokens")
	if requests >= 0 || tokens >= 0 {
		k.account.resync(now, requests, tokens)
	}
}

// headerInt reads a non-negative integer header, or -1.
func headerInt(h http.Header, name string) int {
	v := h.Get(name)
	if v == "" {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return -1
	}
	return n
}
