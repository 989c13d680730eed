package keypool

import "sync/atomic"

// slots counts an account's requests in flight against its limit:
// MaxConcurrent, or the limit learned from the provider's answers.
type slots struct {
	inflight atomic.Int64
	fixed    atomic.Int64   // the limit when not learned; 0 means none
	learned  *adaptiveLimit // nil when adaptive limits are off
}

func (s *slots) init(maxConcurrent int, adaptive bool) {
	s.fixed.Store(int64(maxConcurrent))
	if adaptive {
		s.learned = newAdaptiveLimit(maxConcurrent)
	}
}

// setMax changes MaxConcurrent on a live pool.
func (s *slots) setMax(maxConcurrent int) {
	s.fixed.Store(int64(maxConcurrent))
	if s.learned != nil {
		s.learned.setCeiling(maxConcurrent)
	}
}

// limit is the in-flight limit now; 0 means none.
func (s *slots) limit() int64 {
	if s.learned != nil {
		return s.learned.get()
	}
	return s.fixed.Load()
}

// take claims a slot and returns how many are in flight with it.
func (s *slots) take() (int64, bool) {
	limit := s.limit()
	for {
		n := s.inflight.Load()
		if limit > 0 && n >= limit {
			return 0, false
		}
		if s.inflight.CompareAndSwap(n, n+1) {
			return n + 1, true
		}
	}
}

func (s *slots) put()            { s.inflight.Add(-1) }
func (s *slots) inFlight() int64 { return s.inflight.Load() }

// succeeded records a success sent with inFlight requests in flight: it
// may raise a learned limit.
func (s *slots) succeeded(inFlight int64) {
	if s.learned != nil {
		s.learned.succeeded(inFlight)
	}
}

// overloaded records a 429 without a retry hint sent with inFlight
// requests in flight, and reports whether the learned limit took it
// (false: the account should cool down instead).
func (s *slots) overloaded(inFlight int64) bool {
	return s.learned != nil && s.learned.overloaded(inFlight)
}
