package keypool

import (
	"net/url"
	"sync/atomic"
	"time"
)

// keyState is one key's configuration and live state.
type keyState struct {
	// cfg is the key as validated, with its account's limits: the source
	// of truth for its weight, limits and account, changed only under
	// Pool.reconfig.
	cfg  Key
	name string // cfg.Name, never changes
	// The values of the auth headers, built once; their capacity is
	// their length, so an append by anyone copies rather than writes here.
	bearerHeader []string
	secretHeader []string
	account      *account
	target       *url.URL            // from Key.BaseURL; nil sends to the request's URL
	models       map[string]struct{} // nil serves every model

	inflight atomic.Int64
	// proven is set once the key has answered (any status but 401/403 and
	// provider failures). Until then it gets one request at a time, so a
	// revoked key costs one failed request, not a burst.
	proven       atomic.Bool
	offUntil     atomic.Int64 // disabled until, unix nanoseconds
	ejectedUntil atomic.Int64 // circuit breaker open until
	failsInRow   atomic.Int32

	requests    atomic.Int64
	successes   atomic.Int64
	rateLimited atomic.Int64
	failures    atomic.Int64
	tokens      atomic.Int64 // as the upstream's usage reported them
}

// disabledForever marks a key or account disabled until Pool.Enable.
const disabledForever = int64(1<<63 - 1)

func newKeyState(k Key, acct *account, lim Limits) *keyState {
	k.setLimits(lim)
	ks := &keyState{
		cfg:          k,
		name:         k.Name,
		bearerHeader: []string{"Bearer " + k.Secret}[:1:1],
		secretHeader: []string{k.Secret}[:1:1],
		account:      acct,
	}
	if k.BaseURL != "" {
		ks.target, _ = url.Parse(k.BaseURL) // validated by New
	}
	if len(k.Models) > 0 {
		ks.models = make(map[string]struct{}, len(k.Models))
		for _, m := range k.Models {
			ks.models[m] = struct{}{}
		}
	}
	return ks
}

// serves reports whether the key may ever serve r.
func (k *keyState) serves(r *acquireRequest) bool {
	if k.models != nil && r.model != "" {
		if _, ok := k.models[r.model]; !ok {
			return false
		}
	}
	return r.dest == nil || mayFollow(k.home(r.origin), r.dest)
}

// home is where the key's secret belongs: its BaseURL, or for a key
// without one the URL the caller's request was for.
func (k *keyState) home(origin *url.URL) *url.URL {
	if k.target != nil {
		return k.target
	}
	return origin
}

// disabledUntil is the time until which the key may not be used and is
// not worth waiting for (disabled or ejected, itself or its account), in
// unix nanoseconds, or 0.
func (k *keyState) disabledUntil() int64 {
	return max(k.offUntil.Load(), k.ejectedUntil.Load(), k.account.standing.disabledUntil())
}

// tryTake claims a slot on the key for a request needing tokens and
// returns how many requests its account has in flight with it. When it
// cannot, it returns 0, and readyAt: when it might succeed (unix
// nanoseconds), or 0 if it waits for a request in flight to finish. hard
// is set when the key is disabled or ejected: not worth waiting for.
func (k *keyState) tryTake(now time.Time, tokens int) (inFlight int64, readyAt int64, hard bool) {
	ns := now.UnixNano()
	if at := k.disabledUntil(); at > ns {
		return 0, at, true
	}
	if at := max(k.account.standing.cooldownUntil(), k.account.standing.sharedUntil.Load()); at > ns {
		return 0, at, false
	}
	if k.proven.Load() {
		k.inflight.Add(1)
	} else if !k.inflight.CompareAndSwap(0, 1) {
		return 0, 0, false
	}
	n, at := k.account.take(now, tokens)
	if n == 0 {
		k.inflight.Add(-1)
		if at.IsZero() {
			return 0, 0, false
		}
		return 0, at.UnixNano(), false
	}
	return n, 0, false
}

// put returns a slot claimed by tryTake.
func (k *keyState) put() {
	k.account.slots.put()
	k.inflight.Add(-1)
}
