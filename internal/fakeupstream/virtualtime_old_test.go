//go:build !go1.25

package fakeupstream_test

import "testing"

// inVirtualTime needs testing/synctest, which came with Go 1.25.
func inVirtualTime(t *testing.T, f func(t *testing.T)) {
	t.Skip("needs testing/synctest (Go 1.25 or later)")
}
