package keypool

import (
	"cmp"
	"slices"
	"sync/atomic"
	"time"
)

// tier is the keys of one priority. Keys of a tier share its traffic by
// weight; a lower tier serves a request only when no key of a higher one
// can (see Pool.pick).
type tier struct {
	priority int
	keys     []*keyState
	schedule []int32       // see buildSchedule
	cursor   atomic.Uint64 // position on the cycle
}

// buildTiers groups keys by priority, highest first, each tier keeping
// the keys' order.
func buildTiers(keys []*keyState) []*tier {
	byPriority := make(map[int]*tier)
	var tiers []*tier
	for _, k := range keys {
		t := byPriority[k.cfg.Priority]
		if t == nil {
			t = &tier{priority: k.cfg.Priority}
			byPriority[k.cfg.Priority] = t
			tiers = append(tiers, t)
		}
		t.keys = append(t.keys, k)
	}
	slices.SortStableFunc(tiers, func(a, b *tier) int { return cmp.Compare(b.priority, a.priority) })
	for _, t := range tiers {
		weights := make([]float64, len(t.keys))
		for i, k := range t.keys {
			weights[i] = k.cfg.Weight
		}
		t.schedule = buildSchedule(weights)
	}
	return tiers
}

// fastProbes is how many slots of the cycle a pick tries before it falls
// back to scanning every key.
const fastProbes = 16

// pick takes a key of the tier for r without waiting. It walks the
// weighted cycle from the tier's cursor, skipping keys that cannot serve
// r or were tried; if the first few slots give nothing it scans every
// key. When a key it has not tried is worth waiting for, it falls back to
// keys already tried before it waits; when none is, the keys already
// tried are left to Pool.pick, which tries the other tiers' untried keys
// first. It notes in b why the keys it could not take were refused, and
// reports whether the tier is worth waiting for: some key that serves r
// is only busy or out of budget, rather than disabled, ejected or
// cooling down.
func (t *tier) pick(r *acquireRequest, now time.Time, b *blocked) (k *keyState, inFlight int64, worthWaiting bool) {
	n := uint64(len(t.schedule))
	// Each probe takes the next slot of the shared cycle, so that skipped
	// keys leave the others their shares rather than handing their own
	// share to whichever key follows them on the cycle.
	var start uint64
	for range min(n, fastProbes) {
		start = t.cursor.Add(1)
		k := t.keys[t.schedule[start%n]]
		if !k.serves(r, now) || r.hasTried(k) {
			continue
		}
		if n, _, _ := k.tryTake(now, r.tokens); n > 0 {
			return k, n, false
		}
	}
	nk := uint64(len(t.keys))
	for i := range nk {
		k := t.keys[(start+i)%nk]
		if !k.serves(r, now) {
			continue
		}
		b.possible = true
		if r.hasTried(k) {
			continue
		}
		n, at, why := k.tryTake(now, r.tokens)
		if n > 0 {
			return k, n, false
		}
		b.note(at, why)
		worthWaiting = worthWaiting || why.worthWaiting()
	}
	if !worthWaiting {
		return nil, 0, false
	}
	k, inFlight, _ = t.pickTried(r, now, b)
	return k, inFlight, true
}

// pickTried falls back to the tier's keys that r already tried.
func (t *tier) pickTried(r *acquireRequest, now time.Time, b *blocked) (k *keyState, inFlight int64, worthWaiting bool) {
	for _, k := range r.tried {
		if k.cfg.Priority != t.priority || !t.holds(k) || !k.serves(r, now) {
			continue // another tier's, removed since, or not for this request
		}
		n, at, why := k.tryTake(now, r.tokens)
		if n > 0 {
			return k, n, false
		}
		b.note(at, why)
		worthWaiting = worthWaiting || why.worthWaiting()
	}
	return nil, 0, worthWaiting
}

// holds reports whether k is one of the tier's keys.
func (t *tier) holds(k *keyState) bool {
	return slices.Contains(t.keys, k)
}

// pick takes a key for r without waiting, from the highest tier that can
// serve it: a tier is passed over when every key of it that serves r is
// disabled, ejected or cooling down, and when r failed there with a
// provider failure; it is waited for when a key of it is only busy or
// out of budget, unless r has waited long enough to spill over
// (WithSpillAfter). A key r has not tried, on any tier, comes before one
// it tried: a request whose 429s or refusals used up a tier moves on to
// the next rather than going round the same keys. Tiers where r failed
// are the last resort.
func (p *Pool) pick(r *acquireRequest) (*keyState, int64, blocked) {
	s := p.snap.Load()
	now := p.clock.Now()
	var b blocked
	for _, tried := range [2]bool{false, true} {
		for _, t := range s.tiers {
			if r.failedOn(t.priority) {
				continue
			}
			var k *keyState
			var n int64
			var worthWaiting bool
			if tried {
				k, n, worthWaiting = t.pickTried(r, now, &b)
			} else {
				k, n, worthWaiting = t.pick(r, now, &b)
			}
			if k != nil {
				return k, n, b
			}
			if worthWaiting && !r.spill {
				return nil, 0, b
			}
		}
	}
	for _, t := range s.tiers {
		if !r.failedOn(t.priority) {
			continue
		}
		if k, n, _ := t.pick(r, now, &b); k != nil {
			return k, n, b
		}
		if k, n, _ := t.pickTried(r, now, &b); k != nil {
			return k, n, b
		}
	}
	return nil, 0, b
}

// anotherTierCanServe reports whether a tier r has not failed on has a
// key that serves r and is neither disabled, ejected nor cooling down:
// the next attempt then goes to another provider, at once.
func (s *snapshot) anotherTierCanServe(r *acquireRequest, now time.Time) bool {
	if len(s.tiers) < 2 || len(r.failedTiers) == 0 {
		return false
	}
	for _, t := range s.tiers {
		if r.failedOn(t.priority) {
			continue
		}
		for _, k := range t.keys {
			if k.serves(r, now) && k.usable(now) {
				return true
			}
		}
	}
	return false
}
