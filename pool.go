package keypool

import (
	"container/list"
	"context"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Pool is a weighted pool of API keys with per-key and per-account limits.
// It is safe for concurrent use. Requests reach it through a Transport.
type Pool struct {
	cfg   poolConfig
	clock clock

	snap   atomic.Pointer[snapshot]
	shared *shared // nil without a Store
	observerState

	// nwait counts queued waiters. While it is non-zero, new requests
	// queue behind them (FIFO), and releases wake the queue.
	nwait atomic.Int64

	// reconfig serializes changes to the set of keys (Add, Remove,
	// SetWeight, SetLimits); requests never take it.
	reconfig sync.Mutex

	mu        sync.Mutex // guards the fields below
	waiters   list.List  // of *waiter, oldest first
	timerAt   int64      // when the wake-up timer fires, unix nanoseconds
	stopTimer func() bool
}

// snapshot is an immutable view of the keys; reconfiguration swaps in a
// new one so that picking never takes a lock.
type snapshot struct {
	keys   []*keyState // in the order given
	tiers  []*tier     // by priority, highest first
	byName map[string]*keyState
	// filtersModels is set when some key serves only some models, so that
	// requests must carry their model.
	filtersModels bool
	// ownHeaders are the headers keys carry their secrets in (Key.Header):
	// a caller's copy of one is never sent.
	ownHeaders []string
	// mapsModels is set when some key renames models (Key.ModelMap).
	mapsModels bool
	// countsTokens is set when some account has a TPM limit, so that
	// requests must carry a token estimate.
	countsTokens bool
}

func newSnapshot(keys []*keyState) *snapshot {
	s := &snapshot{keys: keys, tiers: buildTiers(keys), byName: make(map[string]*keyState, len(keys))}
	for _, k := range keys {
		s.byName[k.name] = k
		s.filtersModels = s.filtersModels || k.models != nil || k.modelMap != nil
		s.countsTokens = s.countsTokens || k.cfg.TPM > 0
		s.mapsModels = s.mapsModels || k.modelMap != nil
		if k.secretName != "" && !slices.Contains(s.ownHeaders, k.secretName) {
			s.ownHeaders = append(s.ownHeaders, k.secretName)
		}
	}
	return s
}

// New returns a pool of keys. It checks every key and reports the first
// problem with an error that names the key by position and masked form:
// no keys, an empty or duplicate secret, a negative, NaN or infinite
// weight, a negative limit, a malformed BaseURL, or keys of one Account
// that declare different limits.
func New(keys []Key, opts ...Option) (*Pool, error) {
	cfg := defaultPoolConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	normalized, limits, err := validateKeys(keys)
	if err != nil {
		return nil, err
	}
	p := &Pool{cfg: cfg, clock: cfg.clock}
	if len(cfg.observers) > 0 {
		list := slices.Clone(cfg.observers)
		p.observers.Store(&list)
	}
	if cfg.store != nil {
		if err := storeReady(cfg.store); err != nil {
			return nil, err
		}
		p.shared = newShared(cfg.store, cfg.clock)
	}
	p.setKeys(p.buildKeys(normalized, limits, nil))
	if p.shared != nil {
		p.shared.watch(p)
	}
	return p, nil
}

// storeReady asks a store that can tell whether it is ready.
func storeReady(s Store) error {
	r, ok := s.(interface{ Ready(context.Context) error })
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Ready(ctx); err != nil {
		return fmt.Errorf("%w: the store is not ready: %w", ErrInvalidConfig, err)
	}
	return nil
}

// setKeys puts keys in place for the requests to come.
func (p *Pool) setKeys(keys []*keyState) {
	p.snap.Store(newSnapshot(keys))
	if p.shared != nil {
		p.shared.track(keys)
	}
}

// buildKeys makes the state of validated keys. Keys of an account that
// already has state in existing join it.
func (p *Pool) buildKeys(keys []Key, limits map[string]Limits, existing []*keyState) []*keyState {
	now := p.clock.Now()
	accounts := make(map[string]*account)
	for _, k := range existing {
		if k.cfg.Account != "" {
			accounts[k.cfg.Account] = k.account
		}
	}
	states := make([]*keyState, len(keys))
	for i, k := range keys {
		lim := k.limits()
		var acct *account
		if k.Account == "" {
			acct = newAccount("k:"+secretID(k.Secret), lim, p.cfg.adaptive, now)
		} else {
			lim = limits[k.Account]
			if acct = accounts[k.Account]; acct == nil {
				acct = newAccount("a:"+k.Account, lim, p.cfg.adaptive, now)
				accounts[k.Account] = acct
			}
		}
		states[i] = newKeyState(k, acct, lim)
	}
	return states
}

// acquireRequest is what a request needs from a key.
type acquireRequest struct {
	model string // "" when the request names none: every key serves it
	// modelUnknown is set for a JSON body too large to read for its
	// model: keys that rename models cannot serve it.
	modelUnknown bool
	tokens       int
	// dest, when set, is where a redirect goes: only keys whose secret
	// may go there serve it. origin is the URL of the caller's first
	// request, where keys without a BaseURL belong.
	origin, dest *url.URL
	tried        []*keyState // keys already tried, avoided while others remain
	// failedTiers are the priorities of the tiers where the request met a
	// provider failure: they serve it only when no other tier can.
	failedTiers []int
	// spill is set once the request has waited WithSpillAfter: a tier
	// whose keys are only busy no longer holds it back from lower ones.
	spill bool
}

func (r *acquireRequest) hasTried(k *keyState) bool { return slices.Contains(r.tried, k) }

// failedOn reports whether the request met a provider failure on the tier
// of priority.
func (r *acquireRequest) failedOn(priority int) bool {
	return slices.Contains(r.failedTiers, priority)
}

// failedOnTier notes a provider failure on k's tier.
func (r *acquireRequest) failedOnTier(k *keyState) {
	if !r.failedOn(k.cfg.Priority) {
		r.failedTiers = append(r.failedTiers, k.cfg.Priority)
	}
}

// blocked says why no key could be taken.
type blocked struct {
	possible bool  // some key could serve the request at some point
	waitable bool  // some key is only busy, cooling or out of rate tokens
	busy     bool  // some key is waiting only for a request in flight to end
	earliest int64 // earliest time a waitable key is free, unix nanoseconds; 0 if none
	back     int64 // earliest time a disabled or ejected key comes back
}

func (b *blocked) note(readyAt int64, why refusal) {
	switch {
	case why == refusedOff:
		if b.back == 0 || readyAt < b.back {
			b.back = readyAt
		}
		return
	case readyAt == 0:
		b.busy = true
	case b.earliest == 0 || readyAt < b.earliest:
		b.earliest = readyAt
	}
	b.waitable = true
}

// unavailable is the error for a request that no key can serve now and
// none will before it is worth waiting: none serves it, or every key
// that does is disabled or ejected.
func (b *blocked) unavailable() error {
	if !b.possible {
		return ErrNoKeyAvailable
	}
	return fmt.Errorf("%w: every key that could serve it is disabled or ejected, the first until %s",
		ErrNoKeyAvailable, time.Unix(0, b.back).Format(time.RFC3339))
}

// acquire takes a key for r, waiting in FIFO order for one to free up,
// bounded by ctx and by maxWait. It returns how long it waited.
func (p *Pool) acquire(ctx context.Context, r *acquireRequest, maxWait time.Duration) (*lease, time.Duration, error) {
	if p.nwait.Load() == 0 {
		k, n, b := p.pick(r)
		if k != nil {
			return p.newLease(k, r.tokens, n), 0, nil
		}
		if !b.waitable {
			return nil, 0, b.unavailable()
		}
	} else if !p.snap.Load().anyServes(r, p.clock.Now()) {
		// Do not queue behind others for a key that will never come: a
		// redirect to a host no key belongs to goes on without one.
		return nil, 0, ErrNoKeyAvailable
	}
	if maxWait <= 0 {
		return nil, 0, &WaitError{Err: ErrWaitTimeout}
	}
	return p.wait(ctx, r, maxWait)
}

// anyServes reports whether some key may serve r, disabled or not.
func (s *snapshot) anyServes(r *acquireRequest, now time.Time) bool {
	if !s.filtersModels && r.dest == nil {
		return true
	}
	for _, k := range s.keys {
		if k.serves(r, now) {
			return true
		}
	}
	return false
}

func (p *Pool) newLease(k *keyState, tokens int, inFlight int64) *lease {
	// inFlight counts the slots held, until the request is sent.
	return &lease{pool: p, key: k, tokens: tokens, inFlight: inFlight}
}
