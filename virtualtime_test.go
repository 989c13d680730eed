//go:build go1.25

package keypool

import (
	"testing"
	"testing/synctest"
)

// inVirtualTime runs f in a testing/synctest bubble: time.Now, timers and
// sleeps use the bubble's clock, which jumps ahead whenever every
// goroutine of the test is waiting on it. A pool built inside, on the
// system clock, and a simulator from simInMemory run whole minutes of
// load in milliseconds, and the same way every time. Everything f starts
// must end before it returns.
func inVirtualTime(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	synctest.Test(t, f)
}
