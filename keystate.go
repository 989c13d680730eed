package keypool

import (
	"net/http"
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
	// id names the key to a Store: the same in every replica that holds
	// its secret, whatever the key's place in the list (see secretID).
	id string
	// The values of the auth headers, built once; their capacity is
	// their length, so an append by anyone copies rather than writes here.
	bearerHeader []string
	secretHeader []string
	nameHeader   []string // the value of HeaderKey
	account      *account
	target       *url.URL            // from Key.BaseURL; nil sends to the request's URL
	models       map[string]struct{} // nil serves every model (but see modelMap)
	modelMap     map[string]string   // Key.ModelMap; nil when empty
	// refusedModels holds the mapped models the provider answered
	// model_not_found for, and until when they are not served.
	refusedModels atomic.Pointer[map[string]int64]
	// secretName is the header that carries the secret: Key.Header in
	// canonical form, or "" for the style of Key.Auth.
	secretName string

	inflight atomic.Int64
	// proven is set once the key has answered (any status but 401/403 and
	// provider failures). Until then it gets one request at a time, so a
	// revoked key costs one failed request, not a burst.
	proven       atomic.Bool
	offUntil     atomic.Int64 // disabled until, unix nanoseconds
	ejectedUntil atomic.Int64 // circuit breaker open until
	// probeAt is when an ejected key may take its next request, a probe
	// of whether it works again; probeGap is the time between probes.
	probeAt, probeGap atomic.Int64
	failsInRow        atomic.Int32

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
		id:           secretID(k.Secret),
		bearerHeader: []string{"Bearer " + k.Secret}[:1:1],
		secretHeader: []string{k.Secret}[:1:1],
		nameHeader:   []string{k.Name}[:1:1],
		account:      acct,
	}
	if k.BaseURL != "" {
		ks.target, _ = url.Parse(k.BaseURL) // validated by New
	}
	if len(k.ModelMap) > 0 {
		ks.modelMap = k.ModelMap // a copy, made by validateKeys
	}
	if k.Header != "" {
		ks.secretName = http.CanonicalHeaderKey(k.Header)
	}
	if len(k.Models) > 0 {
		ks.models = make(map[string]struct{}, len(k.Models))
		for _, m := range k.Models {
			ks.models[m] = struct{}{}
		}
	}
	return ks
}

// serves reports whether the key may serve r at now.
func (k *keyState) serves(r *acquireRequest, now time.Time) bool {
	switch {
	case r.model != "" && (k.models != nil || k.modelMap != nil) && !k.servesModel(r.model, now.UnixNano()):
		return false
	case r.modelUnknown && k.modelMap != nil:
		return false // it could not rename the model
	}
	return r.dest == nil || mayFollow(k.home(r.origin), r.dest)
}

// servesModel reports whether the key, which lists models or maps them,
// serves model: a model it maps, unless its provider refused that name,
// or one of its Models.
func (k *keyState) servesModel(model string, ns int64) bool {
	if _, mapped := k.modelMap[model]; mapped {
		return !k.refusedModel(model, ns)
	}
	_, listed := k.models[model]
	return listed
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

// refusal is why tryTake could not take a key.
type refusal uint8

const (
	refusedNot     refusal = iota // taken
	refusedBusy                   // every slot is held; one frees up when a request ends
	refusedBudget                 // out of RPM or TPM until readyAt
	refusedCooling                // the account cools down after a 429 until readyAt
	refusedOff                    // disabled or ejected until readyAt: not worth waiting for
)

// worthWaiting reports whether a key refused this way is worth waiting
// for rather than passing over for a lower tier.
func (why refusal) worthWaiting() bool { return why == refusedBusy || why == refusedBudget }

// tryTake claims a slot on the key for a request needing tokens and
// returns how many requests its account has in flight with it. When it
// cannot, it returns 0, why, and readyAt: when it might succeed (unix
// nanoseconds), or 0 if it waits for a request in flight to finish.
func (k *keyState) tryTake(now time.Time, tokens int) (inFlight int64, readyAt int64, why refusal) {
	ns := now.UnixNano()
	off := k.disabledUntil()
	if off > ns && !k.probeOpen(ns) {
		return 0, min(off, k.nextProbe(ns)), refusedOff
	}
	if at := k.account.standing.cooldownUntil(); at > ns {
		return 0, at, refusedCooling
	}
	if at := k.account.standing.sharedUntil.Load(); at > ns {
		return 0, at, refusedBusy // other replicas hold its slots
	}
	if off > ns {
		// Ejected, and a probe is due: one request, if it claims the
		// probe. Requests begun before the ejection (streams) do not make
		// it busy: it is still ejected, not worth waiting for.
		if !k.inflight.CompareAndSwap(0, 1) {
			return 0, addNanos(ns, time.Duration(k.probeGap.Load())), refusedOff
		}
		if !k.claimProbe(ns) {
			k.inflight.Add(-1)
			return 0, k.nextProbe(ns), refusedOff
		}
	} else if k.proven.Load() {
		k.inflight.Add(1)
	} else if !k.inflight.CompareAndSwap(0, 1) {
		return 0, 0, refusedBusy
	}
	n, at := k.account.take(now, tokens)
	if n == 0 {
		k.inflight.Add(-1)
		if off > ns {
			k.probeAt.Store(ns) // not probed after all: due again
		}
		if at.IsZero() {
			return 0, 0, refusedBusy
		}
		return 0, at.UnixNano(), refusedBudget
	}
	return n, 0, refusedNot
}

// usable reports whether the key is neither disabled, ejected nor
// cooling down, nor held by other replicas: whether it can take a
// request now or as soon as one of its own ends.
func (k *keyState) usable(now time.Time) bool {
	ns := now.UnixNano()
	return k.disabledUntil() <= ns && max(k.account.standing.cooldownUntil(), k.account.standing.sharedUntil.Load()) <= ns
}

// put returns a slot claimed by tryTake.
func (k *keyState) put() {
	k.account.slots.put()
	k.inflight.Add(-1)
}
