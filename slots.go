package keypool

import (
	"sync/atomic"
	"time"
)

// slots counts an account's requests in flight against its limit:
// MaxConcurrent, or the limit learned from the provider's answers.
type slots struct {
	inflight atomic.Int64
	fixed    atomic.Int64   // the limit when not learned; 0 means none
	learned  *adaptiveLimit // nil when adaptive limits are off

	// atProvider counts the requests the provider is still working on:
	// sent and not yet answered, or streams not yet ended. A slot is
	// held until the caller has read the answer, but the provider frees
	// its own when it has written it; what the provider refuses depends
	// on its own count, so that is the count the limit learns from.
	atProvider atomic.Int64
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
func (s *slots) succeeded(inFlight int64, c clock) {
	if s.learned != nil {
		s.learned.succeeded(inFlight, c)
	}
}

// overloaded records a 429 without a retry hint sent with inFlight
// requests in flight, and reports whether the learned limit took it as a
// concurrency overload and went down.
func (s *slots) overloaded(inFlight int64, now time.Time, inARow bool) bool {
	return s.learned != nil && s.learned.overloaded(inFlight, now, inARow)
}

// sent counts a request sent to the provider and returns how many it is
// working on with it.
func (s *slots) sent() int64 { return s.atProvider.Add(1) }

// done counts a request the provider is done with.
func (s *slots) done() { s.atProvider.Add(-1) }
