package fakeupstream

import "time"

// bucket is a token bucket holding up to limit tokens and refilling
// limit per minute, as OpenAI describes its rate limits. A zero limit
// means no limit.
type bucket struct {
	limit  int
	tokens float64
	at     time.Time
}

func (b *bucket) resize(limit int, now time.Time) {
	b.refill(now)
	if b.limit == 0 || float64(limit) < b.tokens {
		b.tokens = float64(limit)
	}
	b.limit = limit
}

func (b *bucket) refill(now time.Time) {
	if b.limit > 0 && now.After(b.at) {
		b.tokens = min(float64(b.limit), b.tokens+now.Sub(b.at).Minutes()*float64(b.limit))
	}
	b.at = now
}

// take takes n tokens, or says how long until there are n.
func (b *bucket) take(n int, now time.Time) (bool, time.Duration) {
	if b.limit == 0 {
		return true, 0
	}
	b.refill(now)
	if b.tokens >= float64(n) {
		b.tokens -= float64(n)
		return true, 0
	}
	missing := float64(n) - b.tokens
	return false, time.Duration(missing / float64(b.limit) * float64(time.Minute))
}

func (b *bucket) give(n int) { b.tokens = min(float64(b.limit), b.tokens+float64(n)) }

// state returns how many tokens the bucket holds, in whole tokens, and
// how long until it is full; ok is false for a bucket with no limit.
func (b *bucket) state(now time.Time) (remaining int, untilFull time.Duration, ok bool) {
	if b.limit == 0 {
		return 0, 0, false
	}
	b.refill(now)
	full := time.Duration((float64(b.limit) - b.tokens) / float64(b.limit) * float64(time.Minute))
	return int(b.tokens), full, true
}
