package keypool

import (
	"math"
	"sync"
	"sync/atomic"
)

// adaptiveLimit learns how many requests an account may have in flight
// when the provider does not say (DeepSeek caps requests in flight per
// account, lowers the cap as the balance drains, and answers over it with
// a bare 429).
//
// It is AIMD in the spirit of Netflix's concurrency-limits, with TCP's
// slow start:
//   - it starts at 1 (a new key is probed one request at a time anyway)
//     and grows by one per success until the first overload;
//   - an overload (a 429 without any retry hint, or a stream left queued
//     past the first-token timeout) sent with n requests in flight proves
//     the cap is below n: the limit drops to at most n-1, and to 90% of
//     what it was;
//   - after that it grows by 1/limit per success, and by 1/(8·limit)
//     near the level that last overloaded, so that finding out whether the
//     cap went back up costs one 429 per 8·limit successes;
//   - it grows only on successes sent while the limit was in use, so an
//     idle account does not drift upwards.
//
// Latency is not used as a signal: an LLM's response time depends on how
// much it writes, not only on load, and DeepSeek signals overload with an
// immediate 429. Queueing shows as keep-alive comments on a stream, which
// the first-token timeout turns into an overload.
type adaptiveLimit struct {
	mu          sync.Mutex
	limit       float64
	ceiling     atomic.Int64 // MaxConcurrent, or 0 for none
	inSlowStart bool
	dropLevel   float64 // in flight when the last overload came; +Inf once passed

	current atomic.Int64 // floor(limit), read without the lock by take
}

// maxLearnedLimit bounds the limit, so that it always fits an int64.
const maxLearnedLimit = 1e6

// probeSlowdown is how much slower the limit grows near the level that
// last overloaded.
const probeSlowdown = 8

func newAdaptiveLimit(ceiling int) *adaptiveLimit {
	l := &adaptiveLimit{limit: 1, inSlowStart: true, dropLevel: math.Inf(1)}
	if ceiling > 0 {
		// A known cap is where to start; the limit only learns when the
		// provider's real cap is lower (a draining balance).
		l.limit, l.inSlowStart = min(float64(ceiling), maxLearnedLimit), false
	}
	l.ceiling.Store(int64(ceiling))
	l.current.Store(int64(l.limit))
	return l
}

// setCeiling changes MaxConcurrent on a live pool: the limit moves to the
// new ceiling, or starts learning from where it is when there is none.
func (l *adaptiveLimit) setCeiling(ceiling int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ceiling.Store(int64(ceiling))
	if ceiling > 0 {
		l.limit, l.inSlowStart = min(float64(ceiling), maxLearnedLimit), false
	}
	l.current.Store(int64(l.limit))
}

func (l *adaptiveLimit) get() int64 { return l.current.Load() }

func (l *adaptiveLimit) ceilingNow() float64 {
	if c := l.ceiling.Load(); c > 0 {
		return float64(c)
	}
	return math.Inf(1)
}

// succeeded grows the limit after a success sent with inFlight requests
// in flight on the account, itself included.
func (l *adaptiveLimit) succeeded(inFlight int64) {
	if cur := l.current.Load(); inFlight < cur || float64(cur) >= l.ceilingNow() {
		return // not held back by the limit, or at the ceiling: no lock needed
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if float64(inFlight) < math.Floor(l.limit) {
		return // the limit was not what held this request back
	}
	switch {
	case l.inSlowStart:
		l.limit++
	case l.limit+1 < l.dropLevel:
		l.limit += 1 / l.limit
	default:
		l.limit += 1 / (l.limit * probeSlowdown)
		if l.limit >= l.dropLevel+1 {
			l.dropLevel = math.Inf(1) // the cap went up: back to normal growth
		}
	}
	l.limit = min(l.limit, l.ceilingNow(), maxLearnedLimit)
	l.current.Store(int64(l.limit))
}

// overloaded lowers the limit after an overload of a request sent with
// inFlight requests in flight. It reports false when inFlight was 1: one
// request cannot overload a concurrency cap, so the cause lies elsewhere
// and the caller should cool the account down instead.
func (l *adaptiveLimit) overloaded(inFlight int64) bool {
	if inFlight <= 1 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inSlowStart = false
	l.dropLevel = float64(inFlight)
	l.limit = max(1, min(l.limit*0.9, float64(inFlight-1)))
	l.current.Store(int64(l.limit))
	return true
}
