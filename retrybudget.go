package keypool

import (
	"sync"
	"sync/atomic"
	"time"
)

// retryBudget bounds retries after provider failures (5xx, broken
// connections, empty answers) to a share of recent requests, as Envoy's
// retry budgets do: when every key's provider is down, each caller gets
// the upstream's answer after at most a try or two instead of a storm of
// retries that multiplies the outage's load.
//
// Requests and retries are counted in windows of budgetWindow; the
// previous window counts in proportion to how much of it still lies
// within the last budgetWindow. Counting takes no lock; only the turn of
// a window does.
type retryBudget struct {
	ratio      float64 // retries allowed per request
	minRetries float64 // retries always allowed per window

	epoch                  atomic.Int64 // index of the current window
	requests, retries      atomic.Int64 // in the current window
	prevRequests, prevRetr atomic.Int64 // in the previous one
	turn                   sync.Mutex
}

const budgetWindow = 10 * time.Second

func newRetryBudget(ratio, minPerSecond float64) *retryBudget {
	return &retryBudget{ratio: ratio, minRetries: minPerSecond * budgetWindow.Seconds()}
}

func (b *retryBudget) rotate(now time.Time) {
	e := now.UnixNano() / int64(budgetWindow)
	if b.epoch.Load() == e {
		return
	}
	b.turn.Lock()
	defer b.turn.Unlock()
	switch old := b.epoch.Load(); {
	case old == e:
	case old == e-1:
		b.prevRequests.Store(b.requests.Swap(0))
		b.prevRetr.Store(b.retries.Swap(0))
	default:
		b.prevRequests.Store(0)
		b.prevRetr.Store(0)
		b.requests.Store(0)
		b.retries.Store(0)
	}
	b.epoch.Store(e)
}

// request counts a caller's request.
func (b *retryBudget) request(now time.Time) {
	b.rotate(now)
	b.requests.Add(1)
}

// allow takes a retry from the budget, or reports that there is none.
func (b *retryBudget) allow(now time.Time) bool {
	b.rotate(now)
	into := float64(now.UnixNano()%int64(budgetWindow)) / float64(budgetWindow)
	prevShare := 1 - into
	requests := float64(b.requests.Load()) + prevShare*float64(b.prevRequests.Load())
	retries := float64(b.retries.Load()) + prevShare*float64(b.prevRetr.Load())
	if retries >= b.minRetries+b.ratio*requests {
		return false
	}
	b.retries.Add(1)
	return true
}
