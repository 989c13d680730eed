package fakeupstream

import (
	"net/http"
	"strconv"
	"time"
)

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

// headers writes OpenAI's x-ratelimit-* headers for the bucket.
func (b *bucket) headers(h http.Header, what string, now time.Time) {
	if b.limit == 0 {
		return
	}
	b.refill(now)
	h.Set("X-Ratelimit-Limit-"+what, strconv.Itoa(b.limit))
	h.Set("X-Ratelimit-Remaining-"+what, strconv.Itoa(int(b.tokens)))
	full := time.Duration((float64(b.limit) - b.tokens) / float64(b.limit) * float64(time.Minute))
	h.Set("X-Ratelimit-Reset-"+what, full.Round(time.Millisecond).String())
}
