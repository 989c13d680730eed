package keypool

import (
	"fmt"
	"net/http"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Option configures a Pool; see New.
type Option func(*poolConfig) error

type poolConfig struct {
	maxWait     time.Duration
	cooldown    time.Duration
	maxCooldown time.Duration
	disableFor  time.Duration
	ejectAfter  int
	ejectFor    time.Duration
	adaptive    bool
	clock       clock
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
		return fmt.Errorf("%w: %s is %v; want more than 0", ErrInvalidConfig, name, d)
	}
	return nil
}

// WithMaxWait bounds how long a request waits for a key when none is
// free; the request's context bounds it too. The default is one minute.
func WithMaxWait(d time.Duration) Option {
	return func(c *poolConfig) error { c.maxWait = d; return positive("WithMaxWait", d) }
}

// WithCooldown sets how long an account cools down after a 429 that says
// nothing of when to come back (DeepSeek sends no Retry-After). Each
// further 429 in a row doubles it, up to the maximum cooldown. The
// default is one second.
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
// in a row (5xx, 408, 409, 529, connection errors) is ejected for d, then
// probed with one request at a time until one succeeds. The default is 5
// failures and 30 seconds.
func WithEjection(failures int, d time.Duration) Option {
	return func(c *poolConfig) error {
		if failures < 1 {
			return fmt.Errorf("%w: WithEjection failures is %d; want 1 or more", ErrInvalidConfig, failures)
		}
		c.ejectAfter, c.ejectFor = failures, d
		return positive("WithEjection duration", d)
	}
}

// WithAdaptiveLimits turns the learning of in-flight limits on or off.
// On, the default, each account's in-flight limit is learned from its
// answers: from 1 up, for accounts whose keys set no MaxConcurrent, and
// at most MaxConcurrent for the others; a 429 without any retry hint sent
// with several requests in flight lowers it, successes raise it. Off,
// accounts without MaxConcurrent have no in-flight limit and a 429 only
// cools the account down.
func WithAdaptiveLimits(on bool) Option {
	return func(c *poolConfig) error { c.adaptive = on; return nil }
}

// withClock makes the pool read time from c; tests use a fake clock.
func withClock(c clock) Option {
	return func(pc *poolConfig) error { pc.clock = c; return nil }
}

// TransportOption configures a Transport; see NewTransport. An option
// given a value it cannot use panics at NewTransport, as time.NewTicker
// does with a bad duration: such a value is a programming error.
type TransportOption func(*Transport)

// AuthStyle is how a key is put on a request.
type AuthStyle int

const (
	// AuthBearer sends "Authorization: Bearer <secret>", as OpenAI,
	// DeepSeek, OpenRouter and most compatible APIs expect. The default.
	AuthBearer AuthStyle = iota
	// AuthAPIKey sends "api-key: <secret>", as Azure OpenAI expects.
	AuthAPIKey
	// AuthXAPIKey sends "x-api-key: <secret>", as Anthropic expects.
	AuthXAPIKey
)

// WithBase sets the RoundTripper that sends each attempt. The default is
// http.DefaultTransport.
func WithBase(rt http.RoundTripper) TransportOption {
	return func(t *Transport) {
		if rt == nil {
			panic("keypool: WithBase(nil)")
		}
		t.base = rt
	}
}

// WithAuth sets how the key is put on each request. The client's own
// Authorization, api-key and x-api-key headers are always removed first.
func WithAuth(s AuthStyle) TransportOption {
	return func(t *Transport) {
		if s < AuthBearer || s > AuthXAPIKey {
			panic(fmt.Sprintf("keypool: WithAuth(%d): unknown AuthStyle", s))
		}
		t.auth = s
	}
}

// WithMaxAttempts bounds how many upstream attempts one request makes,
// the first included. The default is 5.
func WithMaxAttempts(n int) TransportOption {
	return func(t *Transport) {
		if n < 1 {
			panic(fmt.Sprintf("keypool: WithMaxAttempts(%d): want 1 or more", n))
		}
		t.maxAttempts = n
	}
}

// WithMaxBodyBytes bounds the request body that is read into memory to be
// replayed on retries when the request has no GetBody (go-openai and
// openai-go set GetBody, so their bodies are never copied). Larger bodies
// fail with ErrBodyTooLarge. The default is 32 MiB.
func WithMaxBodyBytes(n int64) TransportOption {
	return func(t *Transport) {
		if n < 1 {
			panic(fmt.Sprintf("keypool: WithMaxBodyBytes(%d): want 1 or more", n))
		}
		t.maxBodyBytes = n
	}
}

// WithClassifier lets the caller override how an attempt's outcome is
// judged. f gets the response or error of the attempt and the Outcome
// keypool would use, and returns the Outcome to use. The response body may
// be read; keypool has already buffered the start of error bodies, so f
// sees them whole if they are small.
func WithClassifier(f func(resp *http.Response, err error, def Outcome) Outcome) TransportOption {
	return func(t *Transport) {
		if f == nil {
			panic("keypool: WithClassifier(nil)")
		}
		t.classifier = f
	}
}

// WithRetryOnReset sets whether a request whose connection broke after it
// was written (so the upstream may have seen it) is retried on another
// key. Chat completions are safe to repeat, so the default is true; turn
// it off for requests with side effects.
func WithRetryOnReset(retry bool) TransportOption {
	return func(t *Transport) { t.retryOnReset = retry }
}

// WithFirstTokenTimeout abandons a streamed (text/event-stream) answer
// that sends nothing but keep-alive comments for d, as DeepSeek does
// while a request waits in its queue, and retries it on another key. The
// stream is handed to the caller when its first data line arrives; from
// then on it is never replayed. The default, 0, waits as long as the
// request's context allows.
func WithFirstTokenTimeout(d time.Duration) TransportOption {
	return func(t *Transport) {
		if d < 0 {
			panic(fmt.Sprintf("keypool: WithFirstTokenTimeout(%v): want 0 or more", d))
		}
		t.firstTokenTimeout = d
	}
}

// WithRetryBudget bounds the retries made after provider failures (5xx,
// 408, 409, 529, broken connections, empty answers) to ratio times the
// requests of the last 10 seconds, plus minPerSecond retries a second
// that are always allowed, as Envoy's retry budgets do. When the budget
// is spent such a failure goes to the caller at once. Failovers for
// refused keys and rate limits are not counted: they do not add load to a
// failing provider. The default is 0.2 and 1;
// WithRetryBudget(math.Inf(1), 0) turns the budget off.
func WithRetryBudget(ratio, minPerSecond float64) TransportOption {
	return func(t *Transport) {
		if !(ratio >= 0) || !(minPerSecond >= 0) {
			panic(fmt.Sprintf("keypool: WithRetryBudget(%v, %v): want numbers of 0 or more", ratio, minPerSecond))
		}
		t.budget = newRetryBudget(ratio, minPerSecond)
	}
}

// WithBackoff sets the backoff used before retrying after a provider
// failure (5xx, 408, 409, 529). newBackOff is called once per request
// that needs it. The default is exponential from 200ms to 5s with ±50%
// jitter.
func WithBackoff(newBackOff func() backoff.BackOff) TransportOption {
	return func(t *Transport) {
		if newBackOff == nil {
			panic("keypool: WithBackoff(nil)")
		}
		t.newBackOff = newBackOff
	}
}

func defaultBackOff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 200 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.RandomizationFactor = 0.5
	b.Multiplier = 2
	b.MaxElapsedTime = 0 // attempts are bounded by WithMaxAttempts
	b.Reset()
	return b
}
