package keypool

import (
	"container/list"
	"context"
	"fmt"
	"time"
)

// waiter is a request queued for a key.
type waiter struct {
	req      acquireRequest // a copy, so that callers' requests stay on their stacks
	start    time.Time
	deadline int64 // unix nanoseconds
	// byContext is set when the deadline is the context's, not the
	// pool's maximum wait.
	byContext bool
	earliest  int64 // earliest time a key frees up, as last seen
	grant     chan grant
	elem      *list.Element // nil once out of the queue
}

// timeout is why w gives up when no key frees up before its deadline.
func (w *waiter) timeout() error {
	if w.byContext {
		return errContextDeadlineWait
	}
	return ErrWaitTimeout
}

// errContextDeadlineWait is ErrWaitTimeout when the deadline that cut the
// wait short is the context's: it is then context.DeadlineExceeded too.
var errContextDeadlineWait = fmt.Errorf("%w: %w", ErrWaitTimeout, context.DeadlineExceeded)

type grant struct {
	lease *lease
	err   error
}

func (p *Pool) wait(ctx context.Context, r *acquireRequest, maxWait time.Duration) (*lease, time.Duration, error) {
	start := p.clock.Now()
	w := &waiter{req: *r, start: start, deadline: addNanos(start.UnixNano(), maxWait), grant: make(chan grant, 1)}
	if d, ok := ctx.Deadline(); ok && d.UnixNano() < w.deadline {
		w.deadline, w.byContext = d.UnixNano(), true
	}
	p.mu.Lock()
	w.elem = p.waiters.PushBack(w)
	p.nwait.Add(1)
	p.dispatchLocked()
	p.mu.Unlock()

	expired := make(chan struct{})
	stop := p.clock.AfterFunc(maxWait, func() { close(expired) })
	defer stop()
	var reason error
	select {
	case g := <-w.grant:
		return g.lease, p.clock.Now().Sub(start), g.err
	case <-ctx.Done():
		reason = ctx.Err()
	case <-expired:
		reason = ErrWaitTimeout
	}
	p.mu.Lock()
	if w.elem != nil {
		p.waiters.Remove(w.elem)
		w.elem = nil
		p.nwait.Add(-1)
		// Those behind may fit where this one did not.
		p.dispatchLocked()
		p.mu.Unlock()
	} else { // served while giving up
		p.mu.Unlock()
		g := <-w.grant
		if g.lease != nil && ctx.Err() == nil {
			return g.lease, p.clock.Now().Sub(start), nil
		}
		if g.lease != nil {
			g.lease.release()
		}
	}
	waited := p.clock.Now().Sub(start)
	e := &WaitError{Waited: waited, Err: reason}
	if w.earliest > 0 {
		e.Earliest = time.Unix(0, w.earliest)
	}
	return nil, waited, e
}

// pollInterval bounds how long waiters sleep without a check, should a
// slot free up in a way that wakes nobody (a pick that backs out of a slot
// it briefly held).
const pollInterval = 100 * time.Millisecond

// wake serves queued waiters if there are any; releases call it.
func (p *Pool) wake() {
	if p.nwait.Load() == 0 {
		return
	}
	p.mu.Lock()
	p.dispatchLocked()
	p.mu.Unlock()
}

// dispatchLocked serves waiters in arrival order until one cannot be
// served, then arms a timer for the earliest time a key frees up. Waiters
// that no key could ever serve, or that no key frees up for before their
// deadline, are failed at once rather than left to time out.
func (p *Pool) dispatchLocked() {
	now := p.clock.Now()
	s := p.snap.Load()
	// Strict FIFO, when the ones behind want the same keys as the first.
	strict := !s.filtersModels && len(s.tiers) == 1
	var next int64 // when to look again
	for e := p.waiters.Front(); e != nil; {
		w := e.Value.(*waiter)
		following := e.Next()
		if at := p.tryServeLocked(w, s, now); at != 0 {
			if next == 0 || at < next {
				next = at
			}
			if strict {
				following = nil
			}
		}
		e = following
	}
	p.armTimerLocked(now, next)
}

// tryServeLocked serves w a key if one is free, or an error if none will
// be before its deadline. Otherwise w stays queued, and tryServeLocked
// returns when to look again (unix nanoseconds).
func (p *Pool) tryServeLocked(w *waiter, s *snapshot, now time.Time) (again int64) {
	spillAt := p.spillAt(w, s)
	k, n, b := p.pickFor(w, s, spillAt, now)
	switch {
	case k != nil:
		p.serveLocked(w, grant{lease: p.newLease(k, w.req.tokens, n)})
		return 0
	case !b.waitable:
		p.serveLocked(w, grant{err: b.unavailable()})
		return 0
	case !b.busy && b.earliest > w.deadline && (spillAt == 0 || spillAt > w.deadline):
		w.earliest = b.earliest
		p.serveLocked(w, grant{err: &WaitError{
			Waited: now.Sub(w.start), Earliest: time.Unix(0, b.earliest), Err: w.timeout()}})
		return 0
	}
	w.earliest = b.earliest
	again = b.earliest
	if b.busy || again == 0 {
		again = now.Add(pollInterval).UnixNano()
	}
	if !w.req.spill && spillAt != 0 {
		again = min(again, spillAt)
	}
	return again
}

// pickFor picks a key for w, spilling over to a lower tier once w has
// waited until spillAt, or when the tier it waits for has no key free
// before w's deadline: that tier cannot serve w, so a lower one may.
func (p *Pool) pickFor(w *waiter, s *snapshot, spillAt int64, now time.Time) (*keyState, int64, blocked) {
	w.req.spill = spillAt != 0 && spillAt <= now.UnixNano()
	k, n, b := p.pick(&w.req)
	if k == nil && !w.req.spill && len(s.tiers) > 1 && !b.busy && b.earliest > w.deadline {
		w.req.spill = true
		k, n, b = p.pick(&w.req)
	}
	return k, n, b
}

// spillAt is when w may spill over to a lower tier (unix nanoseconds), or
// 0 if it never does: the pool has one tier, or no WithSpillAfter.
func (p *Pool) spillAt(w *waiter, s *snapshot) int64 {
	if p.cfg.spillAfter <= 0 || len(s.tiers) < 2 {
		return 0
	}
	return addNanos(w.start.UnixNano(), p.cfg.spillAfter)
}

func (p *Pool) serveLocked(w *waiter, g grant) {
	p.waiters.Remove(w.elem)
	w.elem = nil
	p.nwait.Add(-1)
	w.grant <- g
}

// armTimerLocked makes sure dispatch runs again at the latest at t (unix
// nanoseconds); t == 0 with no waiters stops the timer.
func (p *Pool) armTimerLocked(now time.Time, t int64) {
	if p.waiters.Len() == 0 || t == 0 {
		if p.stopTimer != nil && p.waiters.Len() == 0 {
			p.stopTimer()
			p.stopTimer, p.timerAt = nil, 0
		}
		return
	}
	if p.stopTimer != nil && p.timerAt <= t {
		return
	}
	if p.stopTimer != nil {
		p.stopTimer()
	}
	p.timerAt = t
	p.stopTimer = p.clock.AfterFunc(time.Duration(t-now.UnixNano()), func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.timerAt == t { // not replaced by an earlier timer since
			p.stopTimer, p.timerAt = nil, 0
		}
		p.dispatchLocked()
	})
}
