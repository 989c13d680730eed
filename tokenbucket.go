package keypool

import (
	"math"
	"sync"
	"time"
)

// tokenBucket counts an account's tokens per minute. Unlike
// x/time/rate's Limiter (used for RPM), it can take tokens back when a
// request used fewer than reserved, charge more when it used more, and be
// lowered to what the provider says remains: the three things TPM
// accounting needs.
type tokenBucket struct {
	mu       sync.Mutex
	perSec   float64
	capacity float64
	tokens   float64 // may go negative: a debt paid back over time
	at       time.Time
}

func newTokenBucket(perMinute int, now time.Time) *tokenBucket {
	return &tokenBucket{perSec: float64(perMinute) / 60, capacity: float64(perMinute), tokens: float64(perMinute), at: now}
}

func (b *tokenBucket) refillLocked(now time.Time) {
	if now.After(b.at) {
		b.tokens = min(b.capacity, b.tokens+now.Sub(b.at).Seconds()*b.perSec)
		b.at = now
	}
}

// take takes n tokens, or takes none and returns when n will be there.
func (b *tokenBucket) take(now time.Time, n int) (ok bool, readyAt time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now)
	want := min(float64(n), b.capacity) // more could never be granted
	if b.tokens >= want {
		b.tokens -= want
		return true, time.Time{}
	}
	wait := time.Duration(math.Ceil((want - b.tokens) / b.perSec * float64(time.Second)))
	return false, now.Add(max(wait, time.Millisecond))
}

// adjust adds delta tokens (negative to charge more).
func (b *tokenBucket) adjust(now time.Time, delta int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now)
	b.tokens = min(b.capacity, b.tokens+float64(delta))
}

// lowerTo brings the bucket down to remaining if it holds more: the
// provider's count wins when it is the stricter one.
func (b *tokenBucket) lowerTo(now time.Time, remaining int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now)
	b.tokens = min(b.tokens, float64(remaining))
}
