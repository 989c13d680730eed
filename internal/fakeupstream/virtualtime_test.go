//go:build go1.25

package fakeupstream_test

import (
	"testing"
	"testing/synctest"
)

// inVirtualTime runs f in a testing/synctest bubble: the simulator's
// latencies, windows and buckets run on the bubble's clock, which jumps
// ahead whenever every goroutine waits on it. The server must be made
// inside, with NewInMemory, and closed before f returns.
func inVirtualTime(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	synctest.Test(t, f)
}
