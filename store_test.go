package keypool

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// memStore is a Store in memory, for the pool's side of the seam: slots
// shared between pools, blocks, learned limits and wake-ups. It can be
// made to fail. (redisstore tests the real one.)
type memStore struct {
	mu      sync.Mutex
	leases  map[string]map[string]bool // account → leases
	blocks  map[string]time.Time       // account or account/key → until
	limits  map[string]int
	watches []func(string)
	failing atomic.Bool
	calls   atomic.Int64
}

func newMemStore() *memStore {
	return &memStore{leases: map[string]map[string]bool{}, blocks: map[string]time.Time{}, limits: map[string]int{}}
}

var errStoreDown = errors.New("store down")

func (s *memStore) Take(ctx context.Context, t StoreTake) (StoreTaken, error) {
	s.calls.Add(1)
	if s.failing.Load() {
		return StoreTaken{}, errStoreDown
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range []struct {
		id  string
		why StoreRefusal
	}{{t.Account, RefusedAccountDisabled}, {t.Account + "/" + t.Key, RefusedKeyDisabled}} {
		if until := s.blocks[b.id]; until.After(time.Now()) {
			return StoreTaken{Why: b.why, Until: until}, nil
		}
	}
	held := s.leases[t.Account]
	if held == nil {
		held = map[string]bool{}
		s.leases[t.Account] = held
	}
	if t.Limit > 0 && len(held) >= t.Limit {
		return StoreTaken{Why: RefusedSlots, InFlight: len(held), Limit: s.limits[t.Account]}, nil
	}
	held[t.Lease] = true
	return StoreTaken{OK: true, InFlight: len(held), Limit: s.limits[t.Account], LeaseTime: time.Minute}, nil
}

func (s *memStore) Release(ctx context.Context, account, lease string, refund int) (int, error) {
	s.calls.Add(1)
	if s.failing.Load() {
		return 0, errStoreDown
	}
	s.mu.Lock()
	delete(s.leases[account], lease)
	n, watches := len(s.leases[account]), s.watches
	s.mu.Unlock()
	for _, w := range watches {
		w(account)
	}
	return n, nil
}

func (s *memStore) Renew(ctx context.Context, account string, leases []string) error { return nil }

func (s *memStore) Block(ctx context.Context, b StoreBlock) error {
	s.calls.Add(1)
	if s.failing.Load() {
		return errStoreDown
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case b.Until.IsZero():
		delete(s.blocks, b.Account)
		delete(s.blocks, b.Account+"/"+b.Key)
	case b.What == RefusedKeyDisabled:
		s.blocks[b.Account+"/"+b.Key] = b.Until
	case b.What == RefusedAccountDisabled:
		s.blocks[b.Account] = b.Until
	}
	return nil
}

func (s *memStore) SetLimit(ctx context.Context, account string, limit int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits[account] = limit
	return nil
}

func (s *memStore) Watch(wake func(string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watches = append(s.watches, wake)
}

func (s *memStore) held(account string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.leases[account])
}

// Two pools on one store keep an account's cap between them, and a key
// one of them finds revoked is disabled in the other too.
func TestPoolsShareAStore(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		const cap = 3
		sim := startInMemorySim(t, fakeupstream.Config{
			Mode:     fakeupstream.DeepSeek,
			Accounts: map[string]fakeupstream.Account{"sk-shared-0123456789abcdef": {MaxInFlight: cap}},
			Keys:     simKeys(nil, "sk-shared-0123456789abcdef"), Latency: 20 * time.Millisecond,
		})
		store := newMemStore()
		var clients []*http.Client
		for range 2 {
			p := newRealClockPool(t, []Key{{Secret: "sk-shared-0123456789abcdef", MaxConcurrent: cap}}, WithStore(store))
			clients = append(clients, &http.Client{Transport: NewTransport(p, WithBase(sim.Client().Transport))})
		}
		failed := runLoad(20, 400, func(i int) error {
			return postChat(context.Background(), clients[i%2], sim.URL, chatBody)
		})
		if failed != 0 {
			t.Errorf("%d caller errors", failed)
		}
		if got := sim.Total().RateLimited; got != 0 {
			t.Errorf("two pools told a cap of %d each sent %d requests over it", cap, got)
		}
		if n := store.held("k:" + secretID("sk-shared-0123456789abcdef")); n != 0 {
			t.Errorf("%d slots still held in the store after every request", n)
		}
	})

	// A block one pool records holds in the other: pool a finds sk-a
	// revoked, and pool b, asking the store before it sends with sk-a,
	// is refused and marks sk-a disabled too.
	store := newMemStore()
	a := newRealClockPool(t, keysOf("sk-a", "sk-b"), WithStore(store))
	b := newRealClockPool(t, keysOf("sk-a", "sk-b"), WithStore(store))
	a.report(&lease{pool: a, key: a.snap.Load().keys[0]}, Outcome{Effect: EffectKeyRevoked, Retry: RetryNow}, answer(401))
	if b.shared.confirm(context.Background(), &lease{pool: b, key: b.snap.Load().keys[0]}) {
		t.Error("the store granted a slot with a key another pool found revoked")
	}
	if st := b.Stats()[0]; st.State != StateDisabled {
		t.Errorf("in the other pool the revoked key is %v, want disabled", st.State)
	}
}

// A store that fails does not fail requests: the pool keeps to its own
// limits, says so, and joins the store again when it answers.
func TestStoreFailureFallsBackToLocalLimits(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		sim := startInMemorySim(t, fakeupstream.Config{Keys: simKeys(nil, "sk-a", "sk-b"), Latency: time.Millisecond})
		store := newMemStore()
		p := newRealClockPool(t, keysOf("sk-a", "sk-b"), WithStore(store))
		client := &http.Client{Transport: NewTransport(p, WithBase(sim.Client().Transport))}
		send := func(n int) int64 {
			return runLoad(4, n, func(int) error { return postChat(context.Background(), client, sim.URL, chatBody) })
		}
		if failed := send(20); failed != 0 || p.StoreErr() != nil || !p.Stats()[0].Shared {
			t.Fatalf("with the store up: %d failures, StoreErr %v, Shared %v", failed, p.StoreErr(), p.Stats()[0].Shared)
		}
		store.failing.Store(true)
		if failed := send(20); failed != 0 {
			t.Errorf("%d requests failed while the store did", failed)
		}
		if err := p.StoreErr(); !errors.Is(err, ErrStoreUnavailable) || !errors.Is(err, errStoreDown) {
			t.Errorf("StoreErr while the store fails: %v", err)
		}
		if p.Stats()[0].Shared {
			t.Error("Stats says Shared while the store fails")
		}
		calls := store.calls.Load()
		send(20)
		if store.calls.Load() != calls {
			t.Error("the pool kept calling a store that failed a moment ago")
		}
		store.failing.Store(false)
		time.Sleep(storeRetry)
		if failed := send(20); failed != 0 || p.StoreErr() != nil || !p.Stats()[0].Shared {
			t.Errorf("after the store came back: %d failures, StoreErr %v, Shared %v", failed, p.StoreErr(), p.Stats()[0].Shared)
		}
	})
}

// Replicas given the same keys in another order share each key's slots
// and blocks, even when the keys' default names collide (two secrets
// ending alike are both named sk-…cdef, numbered in list order): what a
// store is told identifies a key by its secret, not by its place.
func TestStoreIdentifiesKeysWhateverTheirOrder(t *testing.T) {
	const x, y = "sk-first-0123456789abcdef", "sk-second-9876543210abcdef"
	store := newMemStore()
	a := newRealClockPool(t, []Key{{Secret: x, MaxConcurrent: 1}, {Secret: y, MaxConcurrent: 1}}, WithStore(store))
	b := newRealClockPool(t, []Key{{Secret: y, MaxConcurrent: 1}, {Secret: x, MaxConcurrent: 1}}, WithStore(store))
	// take is a slot as a request gets it: from the pool, confirmed by
	// the store.
	take := func(p *Pool) *lease {
		t.Helper()
		for {
			l, err := acquireFor(p, context.Background(), &acquireRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if p.shared.confirm(context.Background(), l) {
				return l
			}
			l.release()
		}
	}
	// Pool a holds x's one slot; pool b's x must be busy, its y free.
	var held *lease
	for held == nil {
		if l := take(a); l.key.cfg.Secret == x {
			held = l
		} else {
			l.release()
		}
	}
	defer held.release()
	for range 4 {
		l := take(b)
		if l.key.cfg.Secret == x {
			t.Fatal("pool b got x's slot while pool a holds it: the store saw two different keys")
		}
		l.release()
	}
}
