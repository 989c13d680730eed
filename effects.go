package keypool

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// report applies the outcome of the attempt made under l, and what its
// answer's headers say of the account's budgets, to its key and account:
// the state changes of the decision table.
func (p *Pool) report(l *lease, o Outcome, resp *http.Response) {
	status := 0
	if resp != nil {
		status = resp.StatusCode
		resyncFromHeaders(resp, l.key, p.clock)
	}
	switch o.Effect {
	case EffectOK: // the hot path: it reads no clock
		p.answered(l, status)
	case EffectRateLimited:
		p.rateLimited(l, o.Wait, p.clock.Now())
	case EffectKeyRevoked:
		p.revoked(l, p.clock.Now())
	case EffectAccountExhausted:
		p.exhausted(l, p.clock.Now())
	case EffectFailure:
		p.failed(l, p.clock.Now())
	case EffectModelNotFound:
		p.modelNotFound(l, status)
	}
}

// modelNotFound stops a key from serving a model its provider does not
// know by the name the key's ModelMap gives it. The key itself works.
// Without a mapping (a classifier's verdict) there is nothing to stop.
func (p *Pool) modelNotFound(l *lease, status int) {
	p.answered(l, status)
	if l.mapped != "" {
		until := addNanos(p.clock.Now().UnixNano(), p.cfg.disableFor)
		l.key.refuseModel(l.mapped, until)
		p.changed(l.key, StateEvent{State: StateDisabled, Until: time.Unix(0, until), Cause: l.cause, Model: l.mapped})
	}
}

// answered records an answer that shows the key works: a success, or a
// refusal of the request itself.
func (p *Pool) answered(l *lease, status int) {
	k := l.key
	wasProven := k.proven.Swap(true)
	wasEjected := k.recovered()
	if k.failsInRow.Load() != 0 {
		k.failsInRow.Store(0)
	}
	if status >= 200 && status < 300 {
		k.successes.Add(1)
		before := k.account.slots.limit()
		k.account.slots.succeeded(l.served, p.clock)
		p.limitChanged(k, before)
		p.share(k.account)
	}
	k.account.standing.succeeded()
	switch {
	case wasEjected:
		p.changed(k, StateEvent{State: StateReady, Cause: "answered its probe"})
	case !wasProven:
		p.changed(k, StateEvent{State: StateReady, Cause: "answered"})
	}
}

// share tells a store what changed of an account's learned limit, if
// anything did.
func (p *Pool) share(a *account) {
	if p.shared != nil && a.slots.learned != nil {
		p.shared.setLimit(a)
	}
}

// shareBlock tells a store of a block, for every replica.
func (p *Pool) shareBlock(k *keyState, what StoreRefusal, until int64) {
	if p.shared != nil {
		p.shared.block(StoreBlock{Account: k.account.id, Key: k.id, What: what, Until: time.Unix(0, until)})
	}
}

// pauseAfter is how many bare 429s in a row that concurrency does not
// explain an account takes before it pauses: a few in a row happen by
// chance when a provider refuses a share of requests at random (five in
// a row, at one in five, once in 600), but a real limit refuses them
// all.
const pauseAfter = 5

// rateLimited records a 429, after which the request is retried on
// another key at once. With a retry hint (wait > 0) the account cools
// down as the provider asked. Without one, when limits are learned, a
// 429 that concurrency explains lowers the account's learned limit and
// nothing else; one that it does not explain pauses the account only
// once pauseAfter 429s came in a row, for an eighth of the cooldown,
// doubling with each one more (and such a run makes the level the
// account served before count no more). When limits are not learned,
// every bare 429 cools the account down for the cooldown, doubling with
// each in a row.
func (p *Pool) rateLimited(l *lease, wait time.Duration, now time.Time) {
	k := l.key
	k.rateLimited.Add(1)
	k.proven.Store(true) // it answered: the key itself is good
	k.recovered()
	inRow := int(min(k.account.standing.rateLimited(), 64))
	before := k.account.slots.limit()
	var cool time.Duration
	switch {
	case wait > 0:
		cool = min(wait, p.cfg.maxCooldown)
	case k.account.slots.learned == nil:
		cool = min(doubled(p.cfg.cooldown, inRow-1), p.cfg.maxCooldown)
	case k.account.slots.overloaded(l.inFlight, now, inRow >= pauseAfter):
		p.limitChanged(k, before)
		p.share(k.account) // a concurrency cap: the lowered limit is the remedy
		return
	case inRow >= pauseAfter:
		cool = min(doubled(p.cfg.cooldown/8, inRow-pauseAfter), p.cfg.maxCooldown)
	default:
		return
	}
	wasCooling := k.account.standing.cooldownUntil() > now.UnixNano()
	k.account.standing.coolDown(now, cool)
	until := addNanos(now.UnixNano(), cool)
	p.shareBlock(k, RefusedCooling, until)
	if !wasCooling {
		p.accountChanged(k, StateEvent{State: StateCooling, Until: time.Unix(0, until), Cause: l.cause})
	}
}

// revoked disables a key the provider refused (401, 403).
func (p *Pool) revoked(l *lease, now time.Time) {
	k := l.key
	k.failures.Add(1)
	k.proven.Store(false)
	until := addNanos(now.UnixNano(), p.cfg.disableFor)
	storeLater(&k.offUntil, until)
	p.shareBlock(k, RefusedKeyDisabled, until)
	p.changed(k, StateEvent{State: StateDisabled, Until: time.Unix(0, until), Cause: l.cause})
}

// exhausted disables an account that ran out of money or quota; each of
// its keys is probed when it comes back.
func (p *Pool) exhausted(l *lease, now time.Time) {
	k := l.key
	k.failures.Add(1)
	until := addNanos(now.UnixNano(), p.cfg.disableFor)
	k.account.standing.disable(until)
	p.shareBlock(k, RefusedAccountDisabled, until)
	for _, other := range p.snap.Load().keys {
		if other.account == k.account {
			other.proven.Store(false)
		}
	}
	p.accountChanged(k, StateEvent{State: StateDisabled, Until: time.Unix(0, until), Cause: l.cause})
}

// failed records a provider failure; enough in a row eject the key.
// Other replicas are told of the ejection until its first probe: each
// probes for itself.
func (p *Pool) failed(l *lease, now time.Time) {
	k := l.key
	k.failures.Add(1)
	if n := k.failsInRow.Add(1); n >= int32(p.cfg.ejectAfter) {
		k.failsInRow.Store(0)
		probe := k.eject(now, addNanos(now.UnixNano(), p.cfg.ejectFor), p.cfg.cooldown)
		p.shareBlock(k, RefusedKeyDisabled, probe)
		p.changed(k, StateEvent{State: StateEjected, Until: time.Unix(0, probe),
			Cause: fmt.Sprintf("%d failures in a row, the last %s", n, l.cause)})
	}
}

// Disable takes the key with the given name out of rotation until Enable.
// Requests in flight on it finish normally; requests waiting for it are
// served by the other keys.
func (p *Pool) Disable(name string) error {
	k, err := p.snap.Load().key(name)
	if err != nil {
		return err
	}
	k.offUntil.Store(disabledForever)
	p.shareBlock(k, RefusedKeyDisabled, disabledForever)
	p.wake() // waiters that needed it may be failed or served elsewhere now
	p.changed(k, StateEvent{State: StateDisabled, Until: time.Unix(0, disabledForever), Cause: "Pool.Disable"})
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
	k.account.standing.enable()
	if p.shared != nil {
		p.shared.block(StoreBlock{Account: k.account.id, Key: k.id}) // clears
	}
	p.wake()
	p.changed(k, StateEvent{State: StateProbing, Cause: "Pool.Enable"})
	return nil
}

// resyncFromHeaders lowers the account's RPM and TPM buckets to what the
// provider says remains (x-ratelimit-remaining-*, as OpenAI and Azure
// send them, or anthropic-ratelimit-*-remaining), so that its limits are
// kept before a 429 rather than learnt from one.
func resyncFromHeaders(resp *http.Response, k *keyState, c clock) {
	if !k.account.budgets.has() {
		return
	}
	requests := headerInt(resp.Header, "X-Ratelimit-Remaining-Requests")
	tokens := headerInt(resp.Header, "X-Ratelimit-Remaining-Tokens")
	if requests < 0 && tokens < 0 { // Anthropic's names for the same
		requests = headerInt(resp.Header, "Anthropic-Ratelimit-Requests-Remaining")
		tokens = headerInt(resp.Header, "Anthropic-Ratelimit-Tokens-Remaining")
	}
	if requests >= 0 || tokens >= 0 {
		k.account.budgets.resync(c.Now(), requests, tokens)
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
