package main

import (
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
	"github.com/keypool/keypool/internal/redistest"
)

// sharedCapSim is a DeepSeek-like provider whose one account, used by
// keyA and keyB, refuses more than cap requests in flight.
func sharedCapSim(t *testing.T, cap int) *fakeupstream.Server {
	return startSim(t, fakeupstream.Config{
		Mode:     fakeupstream.DeepSeek,
		Accounts: map[string]fakeupstream.Account{"team": {MaxInFlight: cap}},
		Keys:     map[string]fakeupstream.Key{keyA: {Account: "team"}, keyB: {Account: "team"}},
		Latency:  20 * time.Millisecond, Jitter: 5 * time.Millisecond, Seed: 1,
	})
}

// loadReplicas sends callers concurrent streams of n chat requests to
// each proxy and returns how many did not get a 200.
func loadReplicas(t *testing.T, proxies []*testProxy, callers, n int) int {
	var mu sync.Mutex
	failed := 0
	var wg sync.WaitGroup
	for _, p := range proxies {
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range n {
					if status, body := p.chat(t, chatBody); status != 200 {
						mu.Lock()
						failed++
						mu.Unlock()
						t.Logf("%d %.200s", status, body)
					}
				}
			}()
		}
	}
	wg.Wait()
	return failed
}

// Two replicas of the proxy share one real redis-server through
// KEYPOOL_REDIS_URL: each is told the account's cap, and together they
// keep to it, so the provider never sees more in flight than it allows
// and answers no 429. The control, the same replicas without Redis,
// shows that the load is enough to break the cap when each keeps its own
// count.
func TestReplicasShareLimitsThroughRedis(t *testing.T) {
	const cap, callers, n = 3, 6, 15
	keys := keyA + ";account=team;max=3, " + keyB + ";account=team"
	r := redistest.Start(t)

	t.Run("shared", func(t *testing.T) {
		sim := sharedCapSim(t, cap)
		env := map[string]string{"KEYPOOL_KEYS": keys, "KEYPOOL_UPSTREAM": sim.URL, "KEYPOOL_TOKENS": token,
			"KEYPOOL_REDIS_URL": "redis://" + r.Addr + "/0"}
		proxies := []*testProxy{startProxy(t, env), startProxy(t, env)}
		waitFor(t, 5*time.Second, "both replicas to share state", func() bool {
			for _, p := range proxies {
				for _, st := range p.pool.Stats() {
					if !st.Shared {
						return false
					}
				}
			}
			return true
		})
		if failed := loadReplicas(t, proxies, callers, n); failed > 0 {
			t.Errorf("%d of %d requests failed", failed, 2*callers*n)
		}
		total := sim.Total()
		t.Logf("provider: %d OK, %d 429s, at most %d in flight", total.OK, total.RateLimited, sim.MaxInFlight("team"))
		if got := sim.MaxInFlight("team"); got > cap {
			t.Errorf("the provider saw %d in flight at once; the cap is %d", got, cap)
		}
		if total.RateLimited > 0 {
			t.Errorf("the provider answered %d 429s", total.RateLimited)
		}
		if total.OK != 2*callers*n {
			t.Errorf("the provider answered %d OK, want %d", total.OK, 2*callers*n)
		}
	})

	t.Run("control without Redis", func(t *testing.T) {
		sim := sharedCapSim(t, cap)
		env := map[string]string{"KEYPOOL_KEYS": keys, "KEYPOOL_UPSTREAM": sim.URL, "KEYPOOL_TOKENS": token}
		proxies := []*testProxy{startProxy(t, env), startProxy(t, env)}
		loadReplicas(t, proxies, callers, n)
		t.Logf("provider: %d 429s, at most %d in flight", sim.Total().RateLimited, sim.MaxInFlight("team"))
		if sim.Total().RateLimited == 0 && sim.MaxInFlight("team") <= cap {
			t.Errorf("without Redis the replicas kept the cap too: the test's load cannot tell")
		}
	})
}
