package keypool

import (
	"fmt"
	"time"
)

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
	// errors) and rests for a while, but for a probe every cooldown
	// (KeyStats.DisabledUntil is the next one).
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
	// Priority is the key's tier (Key.Priority): summed over the keys of
	// a priority, the counters below tell how much that tier served.
	Priority int
	State    State
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
	// RefusedModels lists, sorted, the models of the key's ModelMap that
	// its provider answered model_not_found for: the key does not serve
	// them for the time WithDisableFor sets, and the requests for them go
	// to other keys.
	RefusedModels []string
	// Limit is the in-flight limit of the key's account: MaxConcurrent,
	// or the limit learned so far (see WithAdaptiveLimits); 0 means none.
	Limit int
	// OverloadLevel is the number of requests in flight at which the
	// account last answered a 429 that concurrency explains, and so
	// above its cap; 0 when none is known. The learned limit stays below
	// it but for a probe now and then.
	OverloadLevel int
	// NextProbe is when the learned limit may next try OverloadLevel
	// again; the zero time when none is known.
	NextProbe time.Time
	// Shared reports whether the account's state is shared with other
	// replicas through the pool's Store now: false without a store, and
	// while the store cannot be reached (see Pool.StoreErr).
	Shared bool
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
			Priority:    k.cfg.Priority,
			InFlight:    int(k.inflight.Load()),
			Requests:    k.requests.Load(),
			Successes:   k.successes.Load(),
			RateLimited: k.rateLimited.Load(),
			Failures:    k.failures.Load(),
			Limit:       int(k.account.slots.limit()),
			Tokens:      k.tokens.Load(),
		}
		off := max(k.offUntil.Load(), k.account.standing.disabledUntil())
		cool := k.account.standing.cooldownUntil()
		switch {
		case off > now:
			st.State, st.DisabledUntil = StateDisabled, time.Unix(0, off)
		case k.ejectedUntil.Load() > now:
			st.State, st.DisabledUntil = StateEjected, time.Unix(0, min(k.ejectedUntil.Load(), k.nextProbe(now)))
		case cool > now:
			st.State = StateCooling
		case !k.proven.Load():
			st.State = StateProbing
		}
		if cool > now {
			st.CooldownUntil = time.Unix(0, cool)
		}
		st.Shared = p.shared != nil && p.shared.err() == nil
		if learned := k.account.slots.learned; learned != nil {
			ls := learned.state()
			st.OverloadLevel, st.NextProbe = int(ls.level), ls.nextProbe
		}
		st.RefusedModels = k.refusedModelNames(now)
		out[i] = st
	}
	return out
}

// StoreErr reports why the pool keeps to its own limits instead of those
// shared through its Store (see WithStore): an error wrapping
// ErrStoreUnavailable and the store's own, while the store cannot be
// reached. It is nil without a store, and once the store answers again.
func (p *Pool) StoreErr() error {
	if p.shared == nil {
		return nil
	}
	return p.shared.err()
}
