package keypool

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/keypool/keypool/internal/fakeupstream"
)

// fullOutage sends callers x perCaller requests while every account
// answers 503, and returns the upstream requests per caller request and
// the slowest caller's wait.
func fullOutage(t *testing.T, opts ...TransportOption) (float64, time.Duration) {
	t.Helper()
	var secrets []string
	var outages []fakeupstream.Outage
	for i := range 4 {
		s := fmt.Sprintf("sk-down-%d-0123456789abcdef", i)
		secrets = append(secrets, s)
		outages = append(outages, fakeupstream.Outage{Account: s, End: time.Hour, Status: 503})
	}
	sim := startInMemorySim(t, fakeupstream.Config{Keys: simKeys(nil, secrets...), Outages: outages})
	p := newRealClockPool(t, keysOf(secrets...), WithEjection(1000, time.Minute)) // no ejection: the budget alone bounds retries
	proveAll(p)
	opts = append([]TransportOption{WithBase(sim.Client().Transport),
		WithBackoff(func() backoff.BackOff { return backoff.NewConstantBackOff(time.Millisecond) })}, opts...)
	client := &http.Client{Transport: NewTransport(p, opts...)}
	const callers, perCaller = 20, 10
	var slowest time.Duration
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perCaller {
				start := time.Now()
				resp, err := client.Post(sim.URL+"/v1/chat/completions", "application/json", strings.NewReader(chatBody))
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 503 {
					t.Errorf("caller got %d, want the upstream's 503", resp.StatusCode)
				}
				mu.Lock()
				slowest = max(slowest, time.Since(start))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return float64(sim.Total().Requests) / (callers * perCaller), slowest
}

func TestRetryBudgetBoundsAnOutage(t *testing.T) { inVirtualTime(t, testRetryBudgetBoundsAnOutage) }

func testRetryBudgetBoundsAnOutage(t *testing.T) {
	amplified, _ := fullOutage(t, WithRetryBudget(math.Inf(1), 0))
	budgeted, slowest := fullOutage(t)
	t.Logf("full outage, 200 requests: %.2f upstream requests per request without a budget, %.2f with the default budget; slowest caller %v",
		amplified, budgeted, slowest)
	if amplified < 4.5 {
		t.Errorf("without a budget each request should try 5 times, got %.2f", amplified)
	}
	// 20% of requests, plus the 10 retries a window always allows, twice
	// if the run straddles the turn of a window.
	if limit := 1 + 0.2 + 20.0/200; budgeted > limit {
		t.Errorf("%.2f upstream requests per request, want at most %.2f", budgeted, limit)
	}
}

func TestRetryBudgetWindows(t *testing.T) {
	b := newRetryBudget(0.5, 0)
	now := time.Unix(1000, 0) // the start of a window
	for range 10 {
		b.request(now)
	}
	allowed := 0
	for range 10 {
		if b.allow(now) {
			allowed++
		}
	}
	if allowed != 5 {
		t.Errorf("%d retries allowed for 10 requests at ratio 0.5, want 5", allowed)
	}
	// Half a window later the previous window counts half.
	later := now.Add(budgetWindow + budgetWindow/2)
	if b.allow(later) {
		t.Error("a retry allowed when half the old window's retries (2.5) match half its requests (5) times 0.5")
	}
	if !newRetryBudget(0, 1).allow(now) {
		t.Error("the minimum retries were not allowed")
	}
}
