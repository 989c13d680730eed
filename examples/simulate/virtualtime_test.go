//go:build go1.25

package main

import (
	"testing"
	"testing/synctest"
)

// inVirtualTime runs f in a testing/synctest bubble: the demo's arrivals,
// deadlines and the simulator's latencies run on the bubble's clock,
// which jumps ahead whenever every goroutine waits on it, so seconds of
// demo take milliseconds and no wall clock.
func inVirtualTime(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	synctest.Test(t, f)
}
