package keypool

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// adaptiveLimit learns how many requests an account may have in flight
// when the provider does not say (DeepSeek caps requests in flight per
// account, lowers the cap as the balance drains, and answers over it with
// a bare 429).
//
// It grows like TCP: from 1 up, by one per success until the first
// overload (slow start), then by 1/limit per success. It grows only on
// successes sent while the limit was in use, so an idle account does not
// drift upwards. Latency is not a signal: an LLM's response time depends
// on how much it writes, not only on load.
//
// An overload is a bare 429 (or a stream left queued past the first-token
// timeout) that a cap explains, as capEvidence judges: not one sent with
// as many in flight as the provider served a moment ago, nor one of the
// refusals it makes at random. Other 429s are about something else (a
// shared rate limit, a capacity problem upstream), and the limit stays
// where it is. An overload with n in flight proves the cap is below n:
// the limit drops to at most n-1 (and 90% of itself), and n is
// remembered as the level that overloaded.
//
// Below that level the limit grows freely; at the level below it, it
// waits. It lets one request try that level again at once (one 429 may be
// chance), then, when that probe overloads too, after probeFirstInterval,
// and after twice as long with each probe that fails again, up to
// probeMaxInterval. A probe that succeeds shows the cap has risen (a
// topped-up balance): the level is forgotten and the limit grows on. So a stable cap costs one 429 per probeMaxInterval per account, and
// a cap that rises is found within probeMaxInterval.
type adaptiveLimit struct {
	mu            sync.Mutex
	limit         float64
	inSlowStart   bool
	overloadLevel int64         // in flight at the last overload; 0 when none is known
	probeInterval time.Duration // wait before trying overloadLevel again
	nextProbe     time.Time

	ceiling atomic.Int64 // MaxConcurrent, or 0 for none
	current atomic.Int64 // floor(limit), read without the lock

	// probeOK and probeFailed count the answers to the probe under way
	// at overloadLevel: probeConfirm successes, more than twice its 429s,
	// show the cap has risen. A 429 fails the probe unless two successes
	// came before it and 429s do not outnumber them: one success may be
	// a count one too high (see okLevel), while a provider that refuses
	// some requests at random refuses now and then what it serves.
	probeOK, probeFailed int

	evidence capEvidence
}

const (
	// probeFirstInterval is the wait before the first probe of a level
	// that overloaded.
	probeFirstInterval = 500 * time.Millisecond
	// probeMaxInterval bounds the wait between probes: it is how long a
	// cap that rises may go unnoticed.
	probeMaxInterval = 8 * time.Second
	// probeConfirm is how many successes at the level that overloaded
	// show that the cap has risen.
	probeConfirm = 3
	// maxLearnedLimit bounds the limit, so that it always fits an int64.
	maxLearnedLimit = 1e6
)

func newAdaptiveLimit(ceiling int) *adaptiveLimit {
	l := &adaptiveLimit{limit: 1, inSlowStart: true}
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

// succeeded records a success sent with inFlight requests in flight on
// the account, itself included, and grows the limit if it was in use. c
// is read only when the limit may probe.
func (l *adaptiveLimit) succeeded(inFlight int64, c clock) {
	l.evidence.succeeded(inFlight, l.current.Load())
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
	case l.overloadLevel > 0 && inFlight >= l.overloadLevel:
		// Successes at the level that overloaded: the cap has risen.
		if l.probeOK++; l.probeOK >= probeConfirm && l.probeOK > 2*l.probeFailed {
			l.overloadLevel, l.probeInterval = 0, probeFirstInterval
			l.limit += 1 / l.limit
		}
	case l.overloadLevel == 0 || math.Floor(l.limit)+1 < float64(l.overloadLevel):
		l.limit += 1 / l.limit
	default:
		// Just below the level that overloaded: try it only when the
		// probe is due, with one more request.
		if now := c.Now(); !now.Before(l.nextProbe) {
			l.limit = float64(l.overloadLevel)
			l.nextProbe = now.Add(l.probeInterval) // one probe at a time
			l.probeOK, l.probeFailed = 0, 0
		}
	}
	l.limit = min(l.limit, l.ceilingNow(), maxLearnedLimit)
	l.current.Store(int64(l.limit))
}

// overloaded judges a 429 without any retry hint sent with inFlight
// requests in flight, and lowers the limit when concurrency explains it.
// It reports whether it did; when it did not, the 429 is about something
// else than concurrency. inARow says the account has had several 429s in
// a row: whatever it served before, it does not serve it now, so the
// level it served no longer counts.
func (l *adaptiveLimit) overloaded(inFlight int64, now time.Time, inARow bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.evidence.refused(inFlight, l.current.Load(), inARow, l.inSlowStart, l.ceiling.Load() > 0) {
		return false
	}
	if l.overloadLevel > 0 && inFlight >= l.overloadLevel {
		if l.probeFailed++; l.probeOK >= 2 && l.probeFailed <= l.probeOK {
			return true // the probe goes on: it has as many successes
		}
		// A probe of the level that overloaded failed again: probe less
		// often.
		l.probeInterval = min(max(2*l.probeInterval, probeFirstInterval), probeMaxInterval)
	} else {
		// A new level: check it again at once, since one 429 may have been
		// chance; only a probe that fails again makes the limit wait.
		l.overloadLevel, l.probeInterval = inFlight, 0
	}
	l.inSlowStart = false
	l.nextProbe = now.Add(l.probeInterval)
	l.limit = max(1, min(l.limit*0.9, float64(l.overloadLevel-1)))
	l.current.Store(int64(l.limit))
	return true
}

// probing reports whether the limit stands at the level that overloaded,
// for a probe; l.mu is held.
func (l *adaptiveLimit) probing() bool {
	return l.overloadLevel > 0 && int64(l.limit) >= l.overloadLevel
}

// settled is the limit without a probe under way: what other replicas
// should use (see Store).
func (l *adaptiveLimit) settled() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.probing() {
		return l.overloadLevel - 1
	}
	return int64(l.limit)
}

// learned is what Stats shows of the limit.
type learned struct {
	level     int64     // overloadLevel
	nextProbe time.Time // when the level may be tried again; zero if none is known
}

func (l *adaptiveLimit) state() learned {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.overloadLevel == 0 {
		return learned{}
	}
	return learned{level: l.overloadLevel, nextProbe: l.nextProbe}
}

// adopt takes on a limit that another replica learned for the account
// (see Store), when it differs from this one's.
func (l *adaptiveLimit) adopt(limit int64) {
	if l.current.Load() == limit {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.probing() {
		return // this replica's probe decides
	}
	if float64(limit) < l.limit {
		l.inSlowStart = false // another replica found the cap
	}
	l.limit = min(float64(limit), l.ceilingNow(), maxLearnedLimit)
	l.current.Store(int64(l.limit))
}
