package keypool

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxHeaderWait bounds any wait read from a header, so that absurd values
// cannot overflow; the pool caps cooldowns further (WithMaxCooldown).
const maxHeaderWait = 24 * time.Hour

// retryAfter reads how long a response asks the client to wait, from the
// first of these it finds usable: retry-after-ms (Azure, OpenAI),
// Retry-After in seconds or as an HTTP-date, and the x-ratelimit-reset-*
// family (OpenAI, Groq, OpenRouter, Anthropic). ok is false if none says.
func retryAfter(h http.Header, now time.Time) (wait time.Duration, ok bool) {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if d, ok := parseRetryAfterMs(v); ok {
			return d, true
		}
	}
	if v := h.Get("Retry-After"); v != "" {
		if d, ok := parseRetryAfter(v, now); ok {
			return d, true
		}
	}
	return rateLimitReset(h, now)
}

// parseRetryAfterMs parses a retry-after-ms value: milliseconds, possibly
// fractional.
func parseRetryAfterMs(v string) (time.Duration, bool) {
	ms, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || math.IsNaN(ms) || ms < 0 {
		return 0, false
	}
	return clampWait(ms * float64(time.Millisecond)), true
}

// parseRetryAfter parses a Retry-After value: delay-seconds (fractions
// accepted, as some providers send them) or an HTTP-date. A date in the
// past means no wait.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if math.IsNaN(s) || s < 0 {
			return 0, false
		}
		return clampWait(s * float64(time.Second)), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return clampWait(float64(max(t.Sub(now), 0))), true
}

// parseResetValue parses one rate-limit reset header: a Go-style duration
// as OpenAI sends ("6m0s", "20ms", "1.5s"), plain seconds, a Unix time in
// seconds or milliseconds (OpenRouter), or an RFC 3339 time (Anthropic).
func parseResetValue(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return 0, false
		}
		return min(d, maxHeaderWait), true
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		switch {
		case math.IsNaN(s) || s < 0:
			return 0, false
		case s > 1e12: // Unix milliseconds
			return clampWait(float64(time.UnixMilli(int64(s)).Sub(now))), true
		case s > 1e9: // Unix seconds
			return clampWait(float64(time.Unix(int64(s), 0).Sub(now))), true
		}
		return clampWait(s * float64(time.Second)), true
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return clampWait(float64(t.Sub(now))), true
	}
	return 0, false
}

// rateLimitReset reads the rate-limit headers. When a remaining count is
// zero, the latest reset among the exhausted limits is the wait; otherwise
// the soonest reset given.
func rateLimitReset(h http.Header, now time.Time) (time.Duration, bool) {
	pairs := [...][2]string{
		{"X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset-Requests"},
		{"X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Tokens"},
		{"Anthropic-Ratelimit-Requests-Remaining", "Anthropic-Ratelimit-Requests-Reset"},
		{"Anthropic-Ratelimit-Tokens-Remaining", "Anthropic-Ratelimit-Tokens-Reset"},
		{"X-Ratelimit-Remaining", "X-Ratelimit-Reset"},
	}
	var exhausted, soonest time.Duration
	found, anyExhausted := false, false
	for _, p := range pairs {
		v := h.Get(p[1])
		if v == "" {
			continue
		}
		d, ok := parseResetValue(v, now)
		if !ok {
			continue
		}
		if strings.TrimSpace(h.Get(p[0])) == "0" {
			exhausted = max(exhausted, d)
			anyExhausted = true
		}
		if !found || d < soonest {
			soonest = d
		}
		found = true
	}
	if anyExhausted {
		return exhausted, true
	}
	return soonest, found
}

// clampWait turns a float count of nanoseconds into a duration in
// [0, maxHeaderWait].
func clampWait(ns float64) time.Duration {
	if !(ns > 0) {
		return 0
	}
	if ns >= float64(maxHeaderWait) {
		return maxHeaderWait
	}
	return time.Duration(ns)
}
