package keypool

import (
	"net/http"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// TransportOption configures a Transport; see NewTransport, and Option
// for how a value an option cannot use is reported.
type TransportOption func(*Transport) error

// AuthStyle is how a key is put on a request.
type AuthStyle int

const (
	// AuthDefault is the zero value: for a Key, the transport's style
	// (WithAuth); for the transport, AuthBearer.
	AuthDefault AuthStyle = iota
	// AuthBearer sends "Authorization: Bearer <secret>", as OpenAI,
	// DeepSeek, OpenRouter and most compatible APIs expect.
	AuthBearer
	// AuthAPIKey sends "api-key: <secret>", as Azure OpenAI and Azure AI
	// Foundry expect.
	AuthAPIKey
	// AuthXAPIKey sends "x-api-key: <secret>", as Anthropic expects.
	AuthXAPIKey
)

// String names the style as ParseKeys reads it.
func (s AuthStyle) String() string {
	switch s {
	case AuthDefault:
		return "default"
	case AuthBearer:
		return "bearer"
	case AuthAPIKey:
		return "api-key"
	case AuthXAPIKey:
		return "x-api-key"
	}
	return "AuthStyle(" + strconv.Itoa(int(s)) + ")"
}

// WithBase sets the RoundTripper that sends each attempt. The default is
// http.DefaultTransport.
func WithBase(rt http.RoundTripper) TransportOption {
	return func(t *Transport) error {
		if rt == nil {
			return invalid("WithBase", "nil RoundTripper")
		}
		t.base = rt
		return nil
	}
}

// WithAuth sets how the key is put on each request. The client's own
// Authorization, api-key and x-api-key headers are always removed first.
func WithAuth(s AuthStyle) TransportOption {
	return func(t *Transport) error {
		if s < AuthDefault || s > AuthXAPIKey {
			return invalid("WithAuth", "unknown AuthStyle %d", int(s))
		}
		t.auth = s
		return nil
	}
}

// WithMaxAttempts bounds how many upstream attempts one request makes,
// the first included. The default is 5.
func WithMaxAttempts(n int) TransportOption {
	return func(t *Transport) error {
		if n < 1 {
			return invalid("WithMaxAttempts", "%d; want 1 or more", n)
		}
		t.maxAttempts = n
		return nil
	}
}

// WithMaxBodyBytes bounds the request body that is read into memory to be
// replayed on retries when the request has no GetBody (go-openai and
// openai-go set GetBody, so their bodies are never copied). Larger bodies
// fail with ErrBodyTooLarge. The default is 32 MiB.
func WithMaxBodyBytes(n int64) TransportOption {
	return func(t *Transport) error {
		if n < 1 {
			return invalid("WithMaxBodyBytes", "%d; want 1 or more", n)
		}
		t.maxBodyBytes = n
		return nil
	}
}

// WithClassifier lets the caller override how an attempt's outcome is
// judged. f gets the response or error of the attempt and the Outcome
// keypool would use, and returns the Outcome to use. The response body may
// be read; keypool has already buffered the start of error bodies, so f
// sees them whole if they are small.
func WithClassifier(f func(resp *http.Response, err error, def Outcome) Outcome) TransportOption {
	return func(t *Transport) error {
		if f == nil {
			return invalid("WithClassifier", "nil function")
		}
		t.classifier = f
		return nil
	}
}

// WithRetryOnReset sets whether a request whose connection broke after it
// was written (so the upstream may have seen it) is retried on another
// key. Chat completions are safe to repeat, so the default is true; turn
// it off for requests with side effects.
func WithRetryOnReset(retry bool) TransportOption {
	return func(t *Transport) error { t.retryOnReset = retry; return nil }
}

// WithFirstTokenTimeout abandons a streamed (text/event-stream) answer
// that sends nothing but keep-alive comments for d, as DeepSeek does
// while a request waits in its queue, and retries it on another key. The
// stream is handed to the caller when its first data line arrives; from
// then on it is never replayed. The default, 0, waits as long as the
// request's context allows.
func WithFirstTokenTimeout(d time.Duration) TransportOption {
	return func(t *Transport) error {
		if d < 0 {
			return invalid("WithFirstTokenTimeout", "%v; want 0 or more", d)
		}
		t.firstTokenTimeout = d
		return nil
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
	return func(t *Transport) error {
		if !(ratio >= 0) || !(minPerSecond >= 0) {
			return invalid("WithRetryBudget", "%v, %v; want numbers of 0 or more", ratio, minPerSecond)
		}
		t.budget = newRetryBudget(ratio, minPerSecond)
		return nil
	}
}

// WithBackoff sets the backoff used before retrying after a provider
// failure (5xx, 408, 409, 529). newBackOff is called once per request
// that needs it. The default is exponential from 200ms to 5s with ±50%
// jitter.
func WithBackoff(newBackOff func() backoff.BackOff) TransportOption {
	return func(t *Transport) error {
		if newBackOff == nil {
			return invalid("WithBackoff", "nil function")
		}
		t.newBackOff = newBackOff
		return nil
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
