package keypool

import (
	"sync/atomic"
	"time"
)

// account is the state that the keys of one account share, in parts
// named for what they guard: its in-flight slots (and the limit learned
// on them), its request and token budgets, and its standing (cooldown
// and disablement). A key that is its own account has one of its own.
type account struct {
	id       string // its name in a Store: Key.Account, or the key's Name
	slots    slots
	budgets  budgets
	standing standing

	sharedLimit atomic.Int64 // the learned limit last told the store
}

func newAccount(id string, lim Limits, adaptive bool, now time.Time) *account {
	a := &account{id: id}
	a.slots.init(lim.MaxConcurrent, adaptive)
	a.budgets.set(now, lim)
	return a
}

// take claims one in-flight slot and the request's budgets, and returns
// how many requests are in flight with it. When it cannot, it returns 0
// and the time the budgets will be there, or the zero time if only the
// slots are full.
func (a *account) take(now time.Time, tokens int) (inFlight int64, readyAt time.Time) {
	n, ok := a.slots.take()
	if !ok {
		return 0, time.Time{}
	}
	if at := a.budgets.take(now, tokens); !at.IsZero() {
		a.slots.put()
		return 0, at
	}
	return n, time.Time{}
}

// setLimits changes the account's limits on a live pool.
func (a *account) setLimits(now time.Time, lim Limits) {
	a.slots.setMax(lim.MaxConcurrent)
	a.budgets.set(now, lim)
}
