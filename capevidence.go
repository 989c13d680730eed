package keypool

import (
	"math"
	"sync"
	"sync/atomic"
)

// capEvidence weighs what an account's answers say of whether its bare
// 429s come from a cap on requests in flight, for the learned limit.
//
// A cap refuses every request above it and none below. So a 429 sent with
// n in flight is a cap's only if the provider has not served n or more in
// flight lately, and only if it does not refuse at random the numbers it
// does serve. It keeps, over a window of recent answers:
//   - okLevel, the highest number in flight that successes were sent with
//     at least twice (once may be a count one too high: the provider
//     frees a slot when it has written an answer, before keypool has read
//     it);
//   - how often the provider refused at numbers up to okLevel: 429s that
//     no cap explains, its random refusals;
//   - how many 429s came in a row above okLevel.
//
// Without random refusals the first 429 above okLevel is a cap's. With
// them, it takes as many in a row as make chance unlikely (under 1%): at
// one refusal in three, five in a row.
type capEvidence struct {
	okLevel      atomic.Int64
	served       [servedLevels]atomic.Int32 // successes per number in flight, this window
	lowOK        atomic.Int64               // successes up to okLevel, this window
	lowRefused   atomic.Int64               // 429s up to okLevel, this window
	highRefusals atomic.Int64               // 429s above okLevel since a success above it
	answers      atomic.Int64               // in this window
	seen         atomic.Int64               // in all, up to windowAnswers

	rolling                              sync.Mutex // guards the window before
	lastLevel, lastLowOK, lastLowRefused int64
}

const (
	// windowAnswers is how many answers make a window, at least; four
	// times the limit for large limits.
	windowAnswers = 32
	// servedLevels bounds the numbers in flight counted one by one; the
	// last counts all the larger ones.
	servedLevels = 64
	// chanceBound is how unlikely a run of random refusals must be before
	// it counts as a cap's.
	chanceBound = 0.01
)

// succeeded counts a success sent with inFlight in flight; limit is the
// limit in force, which sizes the window.
func (e *capEvidence) succeeded(inFlight, limit int64) {
	if inFlight <= e.okLevel.Load() {
		e.lowOK.Add(1)
	} else if e.highRefusals.Load() != 0 {
		e.highRefusals.Store(0)
	}
	if e.served[min(inFlight, servedLevels-1)].Add(1) == 2 && inFlight > e.okLevel.Load() {
		e.okLevel.Store(inFlight) // served twice now: it counts at once
	}
	e.answered(limit)
}

// refused counts a bare 429 sent with inFlight in flight and reports
// whether a cap explains it. inARow says the account has had several 429s
// in a row: whatever it served before, it does not now. searching says
// the limit is still looking for the cap from below (slow start): there,
// the first 429 above what was served is the cap's. told says the limit
// started from MaxConcurrent: then no 429 is taken for a cap's before a
// window of answers has come back, since a few early refusals say less
// than what the user said.
func (e *capEvidence) refused(inFlight, limit int64, inARow, searching, told bool) bool {
	defer e.answered(limit)
	if inARow {
		e.okLevel.Store(0)
	}
	if inFlight <= 1 || (told && !inARow && e.seen.Load() < windowAnswers) {
		return false // one request cannot overload a cap; too early to tell
	}
	if inFlight <= e.okLevel.Load() {
		e.lowRefused.Add(1) // refused where it serves: chance
		return false
	}
	if !searching && e.highRefusals.Add(1) < e.runNeeded() {
		return false
	}
	e.highRefusals.Store(0)
	return true
}

// runNeeded is how many 429s in a row above okLevel it takes to rule out
// chance, given how often the provider refuses where it serves.
func (e *capEvidence) runNeeded() int64 {
	e.rolling.Lock()
	ok, refused := e.lastLowOK+e.lowOK.Load(), e.lastLowRefused+e.lowRefused.Load()
	e.rolling.Unlock()
	// Before the answers say much, the rate is taken to be one in twenty:
	// so the first 429s of an account are not taken for a cap on their
	// own, and once a few dozen answers came back without a refusal, one
	// 429 above okLevel is enough.
	rate := (float64(refused) + 0.5) / (float64(ok+refused) + 10)
	switch {
	case rate < 0.02:
		return 1
	case rate >= 0.5:
		return 8 // refused as often as served: the most evidence asked
	}
	return min(8, int64(math.Ceil(math.Log(chanceBound)/math.Log(rate))))
}

// answered counts an answer in the window and rolls it when it is full.
// Counting 429s too makes a cap that drops show within a window, even
// when nothing succeeds any more above it.
func (e *capEvidence) answered(limit int64) {
	if e.seen.Load() < windowAnswers {
		e.seen.Add(1)
	}
	if e.answers.Add(1) < max(windowAnswers, 4*limit) || !e.rolling.TryLock() {
		return
	}
	defer e.rolling.Unlock()
	level := int64(0)
	for i := range e.served {
		if e.served[i].Swap(0) >= 2 {
			level = int64(i)
		}
	}
	e.okLevel.Store(max(level, e.lastLevel))
	e.lastLevel = level
	e.lastLowOK, e.lastLowRefused = e.lowOK.Swap(0), e.lowRefused.Swap(0)
	e.answers.Store(0)
}
