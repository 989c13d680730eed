package redisstore

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool"
)

// A pool whose Redis cannot be reached when it starts, without WithPing:
// New succeeds, the pool says it keeps to its own limits, and requests
// succeed within them.
func TestStartsWithRedisUnreachable(t *testing.T) {
	const secret = "sk-unreachable-Tq8Rv3Ln"
	release := make(chan struct{})
	u := startUpstream(t, func(_ string, n int, _ http.ResponseWriter, r *http.Request) {
		if n == 0 {
			return // the first proves the key, which then takes more than one
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	rdb := redisClient(freeAddr(t)) // a closed port
	t.Cleanup(func() { rdb.Close() })
	store := New(rdb)
	t.Cleanup(func() { store.Close() })
	p, client := newPool(t, store, []keypool.Key{{Secret: secret, Name: "k", MaxConcurrent: 2}})
	// Before its first request the pool has asked Redis nothing, and says
	// nothing of it.
	t.Logf("StoreErr before the first request: %v", p.StoreErr())

	mustSend(t, client, u)
	err := p.StoreErr()
	if !errors.Is(err, keypool.ErrStoreUnavailable) {
		t.Errorf("StoreErr after a request with Redis unreachable: %v, want one wrapping ErrStoreUnavailable", err)
	} else {
		t.Logf("StoreErr: %v", err)
	}
	if st := statsOf(t, p, "k"); st.Shared {
		t.Errorf("Stats says the key is shared with Redis unreachable: %+v", st)
	}

	// Four callers on a key of two slots: all succeed, two at a time.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			code, err := send(ctx, client, u)
			if err == nil && code != http.StatusOK {
				err = errors.New(http.StatusText(code))
			}
			errs <- err
		}()
	}
	waitFor(t, "two requests upstream", func() bool { return u.count(secret) >= 3 })
	if err := p.StoreErr(); !errors.Is(err, keypool.ErrStoreUnavailable) {
		t.Errorf("StoreErr with two requests out: %v", err)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a request failed with Redis unreachable: %v", err)
		}
	}
	if got := u.count(secret); got != 5 {
		t.Errorf("the upstream got %d requests, want 5", got)
	}
	if got := u.maxInFlight(secret); got > 2 {
		t.Errorf("%d requests in flight on a key of 2: the local limit did not hold", got)
	}
}

// Redis slower than the store's timeout: requests do not fail, the pool
// says it keeps to its own limits while it lasts, and it rejoins after.
// CLIENT PAUSE ALL holds every client's commands, the pause's own
// connection's included, for as long as it is told: so Redis is slow
// for that long, then answers again without being asked.
func TestSlowRedisFallsBackAndRejoins(t *testing.T) {
	r := startRedis(t)
	if !r.Real() {
		t.Skip("miniredis has no CLIENT PAUSE; the real server is needed")
	}
	const secret = "sk-slow-redis-Mw5Xc2Kd"
	u := startUpstream(t, nil)
	store := New(r.client(t), WithPrefix("slow:"))
	t.Cleanup(func() { store.Close() })
	p, client := newPool(t, store, []keypool.Key{{Secret: secret, Name: "k", MaxConcurrent: 4}})
	shared := func() bool { return statsOf(t, p, "k").Shared }

	mustSend(t, client, u)
	if err := p.StoreErr(); err != nil || !shared() {
		t.Fatalf("before the pause: StoreErr %v, shared %v", err, shared())
	}
	admin := r.client(t)
	// The pause is 50 times the store's timeout; the requests are sent
	// in its first 2 s, so that a slow machine does not see its end.
	const pause, sending = 5 * time.Second, 2 * time.Second
	paused := time.Now()
	if err := admin.Do(context.Background(), "CLIENT", "PAUSE", pause.Milliseconds(), "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	// Requests through the pause: none fails, and after the first, whose
	// call to Redis times out, the pool says it keeps to its own limits.
	sent, wrong := 0, 0
	var first error
	for time.Since(paused) < sending {
		mustSend(t, client, u)
		sent++
		if err := p.StoreErr(); !errors.Is(err, keypool.ErrStoreUnavailable) || shared() {
			wrong++
			if wrong == 1 {
				t.Errorf("after request %d of the pause: StoreErr %v, shared %v", sent, err, shared())
			}
		} else if first == nil {
			first = err
		}
	}
	t.Logf("%d requests during the pause, %d of them with StoreErr nil or shared; StoreErr: %v", sent, wrong, first)
	// After it, the pool rejoins at a request.
	waitFor(t, "the rejoin", func() bool {
		mustSend(t, client, u)
		return p.StoreErr() == nil && shared()
	})
	if err := admin.Ping(context.Background()).Err(); err != nil {
		t.Errorf("Redis after the pause: %v", err)
	}
}
