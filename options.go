package keypool

import (
	"fmt"
	"time"
)

// Option configures a Pool; see New.
//
// Options of both kinds, Option and TransportOption, check their values
// the same way: a value that cannot be used is reported as an error that
// wraps ErrInvalidConfig and names the option, since such values often
// come from configuration. New returns that error. NewTransport has no
// error result, so that it fits in an http.Client literal; it panics
// with the error instead, as time.NewTicker does with a bad duration. A
// transport is built once, at start-up, where the panic shows at once.
type Option func(*poolConfig) error

type poolConfig struct {
	maxWait     time.Duration
	cooldown    time.Duration
	maxCooldown time.Duration
	disableFor  time.Duration
	ejectAfter  int
	ejectFor    time.Duration
	spillAfter  time.Duration
	observers   []Observer
	adaptive    bool
	clock       clock
	store       Store
}

func defaultPoolConfig() poolConfig {
	return poolConfig{
		maxWait:     time.Minute,
		cooldown:    time.Second,
		maxCooldown: 2 * time.Minute,
		disableFor:  30 * time.Minute,
		ejectAfter:  5,
		ejectFor:    30 * time.Second,
		adaptive:    true,
		clock:       systemClock{},
	}
}

func positive(name string, d time.Duration) error {
	if d <= 0 {
		return invalid(name, "%v; want more than 0", d)
	}
	return nil
}

// invalid reports a value an option cannot use.
func invalid(option, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, option, fmt.Sprintf(format, args...))
}

// WithMaxWait bounds how long a request waits for a key when none is
// free; the request's context bounds it too. The default is one minute.
func WithMaxWait(d time.Duration) Option {
	return func(c *poolConfig) error { c.maxWait = d; return positive("WithMaxWait", d) }
}

// WithCooldown sets how long an account cools down after a 429 that says
// nothing of when to come back (DeepSeek sends no Retry-After), when
// limits are not learned; each further 429 in a row doubles it, up to the
// maximum cooldown. When they are learned, such 429s lower the learned
// limit instead, and only a run of them that no cap explains pauses the
// account, for an eighth of this, doubling. The default is one second.
func WithCooldown(d time.Duration) Option {
	return func(c *poolConfig) error { c.cooldown = d; return positive("WithCooldown", d) }
}

// WithMaxCooldown caps every cooldown, including those an upstream asks
// for in Retry-After. The default is two minutes.
func WithMaxCooldown(d time.Duration) Option {
	return func(c *poolConfig) error { c.maxCooldown = d; return positive("WithMaxCooldown", d) }
}

// WithDisableFor sets how long a key stays disabled after a 401 or 403,
// and an account after a 402 or an exhausted quota, before one request
// probes it again. Pool.Enable re-enables at once. The default is 30
// minutes.
func WithDisableFor(d time.Duration) Option {
	return func(c *poolConfig) error { c.disableFor = d; return positive("WithDisableFor", d) }
}

// WithEjection sets the circuit breaker: a key that fails this many times
// in a row (5xx, 408, 409, 529, connection errors) is ejected for d.
// While it is ejected, one request every cooldown (WithCooldown) probes
// it, and the first that gets an answer puts it back: traffic returns
// within a cooldown of its provider's recovery. After d it is probed with
// one request at a time until one succeeds. The default is 5 failures and
// 30 seconds.
func WithEjection(failures int, d time.Duration) Option {
	return func(c *poolConfig) error {
		if failures < 1 {
			return invalid("WithEjection", "%d failures; want 1 or more", failures)
		}
		c.ejectAfter, c.ejectFor = failures, d
		return positive("WithEjection", d)
	}
}

// WithSpillAfter lets a request that has waited d for a key of its tier,
// every one of which is busy or out of its RPM or TPM budget, go to a
// lower tier (see Key.Priority). The default, 0, never spills because of
// waiting: a lower tier then serves only when no key of a higher one can,
// which includes a tier none of whose keys frees up before the request's
// wait ends (WithMaxWait, or its context's deadline).
func WithSpillAfter(d time.Duration) Option {
	return func(c *poolConfig) error {
		if d < 0 {
			return invalid("WithSpillAfter", "%v; want 0 (never) or more", d)
		}
		c.spillAfter = d
		return nil
	}
}

// WithAdaptiveLimits turns the learning of in-flight limits on or off.
// On, the default, each account's in-flight limit is learned from its
// answers: from 1 up, for accounts whose keys set no MaxConcurrent, and
// at most MaxConcurrent for the others. A 429 without any retry hint that
// a cap on requests in flight explains lowers it; successes raise it; a
// 429 that no cap explains (the provider served as many at once a moment
// ago, or refuses at random) leaves it alone, and pauses the account only
// after several in a row. See the package documentation. Off, accounts
// without MaxConcurrent have no in-flight limit and every bare 429 cools
// the account down.
func WithAdaptiveLimits(on bool) Option {
	return func(c *poolConfig) error { c.adaptive = on; return nil }
}

// withClock makes the pool read time from c; tests use a fake clock.
func withClock(c clock) Option {
	return func(pc *poolConfig) error { pc.clock = c; return nil }
}
