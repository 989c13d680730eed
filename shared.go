package keypool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// shared is a pool's link to a Store: it asks the store to confirm each
// slot the pool grants, gives slots back, and tells the store what the
// answers taught. When the store fails it stands aside for a while and
// the pool keeps to its own limits; it tries again after that.
type shared struct {
	store   Store
	clock   clock
	timeout time.Duration // per call

	process  string // random, so that lease IDs differ between replicas
	leaseSeq atomic.Uint64

	downUntil atomic.Int64 // unix nanoseconds: the store is not called before
	mu        sync.Mutex
	lastErr   error // while down

	accounts atomic.Pointer[map[string]*account] // by ID, for wake-ups
}

const (
	// storeTimeout bounds every call to the store: a request never waits
	// longer than this on it.
	storeTimeout = 100 * time.Millisecond
	// storeRetry is how long the pool keeps to its own limits after the
	// store failed, before it asks the store again.
	storeRetry = time.Second
	// sharedPoll bounds how long an account whose slots are all held by
	// other replicas is passed over, should their release not be heard.
	sharedPoll = 250 * time.Millisecond
)

func newShared(s Store, c clock) *shared {
	var id [8]byte
	rand.Read(id[:])
	sh := &shared{store: s, clock: c, timeout: storeTimeout, process: hex.EncodeToString(id[:])}
	sh.accounts.Store(&map[string]*account{})
	return sh
}

// watch hears of slots released anywhere, and lets the waiters of that
// account try again.
func (sh *shared) watch(p *Pool) {
	sh.store.Watch(func(id string) {
		if a := (*sh.accounts.Load())[id]; a != nil {
			a.standing.sharedUntil.Store(0)
			p.wake()
		}
	})
}

// track remembers the accounts of keys, for wake-ups.
func (sh *shared) track(keys []*keyState) {
	m := make(map[string]*account, len(keys))
	for _, k := range keys {
		m[k.account.id] = k.account
	}
	sh.accounts.Store(&m)
}

// up reports whether the store may be called now.
func (sh *shared) up() bool {
	return sh.downUntil.Load() <= sh.clock.Now().UnixNano()
}

// failed notes that the store failed: it is passed over for a while.
func (sh *shared) failed(err error) {
	sh.mu.Lock()
	sh.lastErr = err
	sh.mu.Unlock()
	sh.downUntil.Store(sh.clock.Now().Add(storeRetry).UnixNano())
}

// succeeded notes that the store answered.
func (sh *shared) succeeded() {
	if sh.downUntil.Load() == 0 {
		return
	}
	sh.mu.Lock()
	sh.lastErr = nil
	sh.mu.Unlock()
	sh.downUntil.Store(0)
}

// err is why the pool keeps to its own limits now, or nil.
func (sh *shared) err() error {
	if sh.up() && sh.downUntil.Load() == 0 {
		return nil
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.lastErr == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrStoreUnavailable, sh.lastErr)
}

// call runs f on the store with a short deadline, unless the store is
// down; it reports whether f ran and succeeded.
func (sh *shared) call(ctx context.Context, f func(ctx context.Context) error) bool {
	if !sh.up() {
		return false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sh.timeout)
	defer cancel()
	if err := f(ctx); err != nil {
		sh.failed(err)
		return false
	}
	sh.succeeded()
	return true
}

// confirm asks the store for the slot the pool granted l. It reports
// false when the store refused it; the refusal is then marked on the
// key or account, so that the pool passes them over. When the store
// cannot be reached, the pool's grant stands.
func (sh *shared) confirm(ctx context.Context, l *lease) bool {
	k, a := l.key, l.key.account
	t := StoreTake{
		Account: a.id, Key: k.id, Lease: sh.process + "-" + strconv.FormatUint(sh.leaseSeq.Add(1), 36),
		Limit: int(a.slots.limit()), RPM: k.cfg.RPM, TPM: k.cfg.TPM, Tokens: l.tokens,
	}
	var got StoreTaken
	if !sh.call(ctx, func(ctx context.Context) (err error) { got, err = sh.store.Take(ctx, t); return err }) {
		return true // the pool's own limits hold
	}
	if got.Limit > 0 && a.slots.learned != nil {
		// What any replica learned holds for all of them.
		a.slots.learned.adopt(int64(got.Limit))
		a.sharedLimit.Store(int64(got.Limit))
	}
	if got.OK {
		l.storeLease, l.sharedInFlight = t.Lease, int64(got.InFlight)
		// Every third of the lease time, so that a renewal may fail or
		// be late twice before the slot lapses (a floor of a second
		// renewed a one-second lease only as it expired).
		l.renewEvery = got.LeaseTime / 3
		if l.renewEvery <= 0 {
			l.renewEvery = time.Second // the store did not say
		}
		// From now, not from the answer: the provider may take longer
		// than the lease time to send its headers.
		l.keepAlive()
		return true
	}
	until := got.Until.UnixNano()
	switch got.Why {
	case RefusedSlots:
		storeLater(&a.standing.sharedUntil, sh.clock.Now().Add(sharedPoll).UnixNano())
	case RefusedBudget:
		storeLater(&a.standing.sharedUntil, until)
	case RefusedCooling:
		// Another replica's provider asked the account to rest: it cools
		// here too, and says so in Stats, as after a 429 of its own. A
		// release elsewhere does not end it, as it ends a sharedUntil.
		if a.standing.cooldownUntil() < until {
			storeLater(&a.standing.coolUntil, until)
			l.pool.accountChanged(k, StateEvent{State: StateCooling, Until: got.Until, Cause: "cooling down in another replica, through the store"})
		}
	case RefusedAccountDisabled:
		if a.standing.disabledUntil() < until {
			a.standing.disable(until)
			l.pool.accountChanged(k, StateEvent{State: StateDisabled, Until: got.Until, Cause: "disabled by another replica, through the store"})
		}
	case RefusedKeyDisabled:
		if k.offUntil.Load() < until {
			storeLater(&k.offUntil, until)
			l.pool.changed(k, StateEvent{State: StateDisabled, Until: got.Until, Cause: "disabled by another replica, through the store"})
		}
	}
	return false
}

// release gives l's slot back to the store, correcting its tokens, and
// returns how many slots the account still held then, with l's, or 0
// when the store did not say.
func (sh *shared) release(l *lease, refund int) int64 {
	var n int
	if !sh.call(context.Background(), func(ctx context.Context) (err error) {
		n, err = sh.store.Release(ctx, l.key.account.id, l.storeLease, refund)
		return err
	}) {
		return 0
	}
	return int64(n) + 1
}

// renew keeps l's slot alive while its answer is read.
func (sh *shared) renew(l *lease) {
	sh.call(context.Background(), func(ctx context.Context) error {
		return sh.store.Renew(ctx, l.key.account.id, []string{l.storeLease})
	})
}

// block records a block for every replica.
func (sh *shared) block(b StoreBlock) {
	sh.call(context.Background(), func(ctx context.Context) error { return sh.store.Block(ctx, b) })
}

// setLimit records a learned limit that changed, for every replica.
func (sh *shared) setLimit(a *account) {
	limit := a.slots.learned.settled()
	if a.sharedLimit.Swap(limit) == limit {
		return
	}
	sh.call(context.Background(), func(ctx context.Context) error {
		return sh.store.SetLimit(ctx, a.id, int(limit))
	})
}
