package keypool

import (
	"sync/atomic"
	"time"
)

// standing is whether an account may be used: cooling down after a 429,
// or disabled after a 402 or an exhausted quota (or Disable).
type standing struct {
	coolUntil    atomic.Int64 // unix nanoseconds
	offUntil     atomic.Int64 // unix nanoseconds
	limitedInRow atomic.Int32 // 429s since the last success
	// sharedUntil is when the store may grant a slot again, after it
	// refused one: other replicas hold every slot, or spent a budget. A
	// slot released anywhere clears it.
	sharedUntil atomic.Int64
}

// coolDown rests the account for d from now.
func (s *standing) coolDown(now time.Time, d time.Duration) {
	storeLater(&s.coolUntil, addNanos(now.UnixNano(), d))
}

// rateLimited counts a 429 and returns how many came in a row.
func (s *standing) rateLimited() int32 { return s.limitedInRow.Add(1) }

// succeeded ends a run of 429s.
func (s *standing) succeeded() {
	if s.limitedInRow.Load() != 0 {
		s.limitedInRow.Store(0)
	}
}

func (s *standing) disable(until int64) { storeLater(&s.offUntil, until) }

// enable clears disablement, cooldown and the run of 429s.
func (s *standing) enable() {
	s.offUntil.Store(0)
	s.coolUntil.Store(0)
	s.sharedUntil.Store(0)
	s.limitedInRow.Store(0)
}

func (s *standing) cooldownUntil() int64 { return s.coolUntil.Load() }
func (s *standing) disabledUntil() int64 { return s.offUntil.Load() }

// storeLater sets *v to t unless it already holds a later time.
func storeLater(v *atomic.Int64, t int64) {
	for {
		old := v.Load()
		if old >= t || v.CompareAndSwap(old, t) {
			return
		}
	}
}
