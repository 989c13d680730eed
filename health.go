package keypool

import (
	"fmt"
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

// State is the condition of a key, as Stats reports it.
type State int

const (
	// StateReady means the key takes requests.
	StateReady State = iota
	// StateProbing means the key has not answered yet, or is back from
	// ejection or disablement: it takes one request at a time until one
	// succeeds.
	StateProbing
	// StateCooling means the key's account got a 429 and rests until
	// KeyStats.CooldownUntil.
	StateCooling
	// StateEjected means the key failed repeatedly (5xx, connection
	// errors) and rests for a while.
	StateEjected
	// StateDisabled means the key was refused (401, 403), its account ran
	// out of money or quota (402, insufficient_quota), or Disable was
	// called.
	StateDisabled
)

func (s State) String() string {
	switch s {
	case StateReady:
		return "ready"
	case StateProbing:
		return "probing"
	case StateCooling:
		return "cooling"
	case StateEjected:
		return "ejected"
	case StateDisabled:
		return "disabled"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// KeyStats is a snapshot of one key's state and counters. It holds no
// secret.
type KeyStats struct {
	Name    string // the key's Name, masked secret by default
	Account string // the key's Account, "" if it stands alone
	State   State
	// InFlight is the number of requests holding the key: sent and not
	// yet fully read or closed.
	InFlight int
	// Requests counts attempts sent with the key; Successes those that
	// got a 2xx; RateLimited those that got a 429; Failures those refused
	// for the key or account (401, 402, 403, quota), and provider
	// failures (5xx, connection errors). Requests rejected for their own
	// sake (400, 404, 422) count in none of the last three.
	Requests, Successes, RateLimited, Failures int64
	// CooldownUntil is when the account's cooldown ends, if it is cooling.
	CooldownUntil time.Time
	// DisabledUntil is when the key or account will be probed again, if
	// it is disabled or ejected; far in the future after Disable.
	DisabledUntil time.Time
	// Limit is the in-flight limit of the key's account: MaxConcurrent,
	// or the limit learned so far (see WithAdaptiveLimits); 0 means none.
	Limit int
	// Tokens counts the tokens the upstream reported using for the key's
	// requests (usage of JSON answers and of streams' final chunks).
	Tokens int64
}

// Stats returns a snapshot of every key, in the order given to New.
func (p *Pool) Stats() []KeyStats {
	now := p.clock.Now().UnixNano()
	keys := p.snap.Load().keys
	out := make([]KeyStats, len(keys))
	for i, k := range keys {
		st := KeyStats{
			Name:        k.name,
			Account:     k.cfg.Account,
			InFlight:    int(k.inflight.Load()),
			Requests:    k.requests.Load(),
			Successes:   k.successes.Load(),
			RateLimited: k.rateLimited.Load(),
			Failures:    k.failures.Load(),
			Limit:       k.account.limit(),
			Tokens:      k.tokens.Load(),
		}
		off := max(k.offUntil.Load(), k.account.disabledUntil())
		cool := k.account.cooldownUntil()
		switch {
		case off > now:
			st.State, st.DisabledUntil = StateDisabled, time.Unix(0, off)
		case k.ejectedUntil.Load() > now:
			st.State, st.DisabledUntil = StateEjected, time.Unix(0, k.ejectedUntil.Load())
		case cool > now:
			st.State = StateCooling
		case !k.proven.Load():
			st.State = StateProbing
		}
		if cool > now {
			st.CooldownUntil = time.Unix(0, cool)
		}
		out[i] = st
	}
	return out
}
