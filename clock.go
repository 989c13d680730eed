package keypool

import (
	"math"
	"time"
)

// clock is where the pool gets time from. Tests inject a fake one so that
// cooldowns, waits and backoff run without sleeping.
type clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d and returns a
	// function that cancels the call if it has not started; the function
	// reports whether it did cancel it.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// sleep waits for d on c, or until done is closed; it reports whether the
// full d elapsed.
func sleep(c clock, d time.Duration, done <-chan struct{}) bool {
	if d <= 0 {
		return true
	}
	fired := make(chan struct{})
	stop := c.AfterFunc(d, func() { close(fired) })
	select {
	case <-fired:
		return true
	case <-done:
		stop()
		return false
	}
}

// addNanos returns t + d for t in unix nanoseconds, saturating at the
// largest time instead of wrapping into the past: a huge duration means
// "as long as possible".
func addNanos(t int64, d time.Duration) int64 {
	if d > 0 && t > math.MaxInt64-int64(d) {
		return math.MaxInt64
	}
	if d < 0 && t < math.MinInt64-int64(d) {
		return math.MinInt64
	}
	return t + int64(d)
}

// doubled returns d doubled n times, saturating at the largest duration.
func doubled(d time.Duration, n int) time.Duration {
	for range n {
		if d > math.MaxInt64/2 {
			return math.MaxInt64
		}
		d *= 2
	}
	return d
}
