package fakeupstream

import "time"

// Mode selects how accounts are limited and whether 429s say when to
// retry. It applies to every endpoint; the endpoint decides only the
// shape of the answers.
type Mode int

const (
	// DeepSeek: a cap on requests in flight per account; 429 at once when
	// over it, with no Retry-After and no rate-limit headers.
	DeepSeek Mode = iota
	// OpenAI: RPM and TPM buckets per account, rate-limit headers on
	// every answer (x-ratelimit-* on chat completions, anthropic-ratelimit-*
	// on Messages), Retry-After on 429 (and Retry-After-Ms on chat
	// completions, as OpenAI and Azure OpenAI send it).
	OpenAI
)

// Fault is a permanent condition of a key. Each answers every request
// of the key at once, before outages, random faults and admission (but
// FaultSlowHeaders, which delays admitted answers).
type Fault int

// The faults a key can have.
const (
	FaultNone              Fault = iota // no fault
	FaultRevoked                        // 401 invalid_api_key
	FaultNoBalance                      // 402 Insufficient Balance (DeepSeek)
	FaultQuota                          // 429 insufficient_quota (OpenAI)
	FaultForbidden                      // 403
	FaultRateLimited                    // 429 rate_limit_exceeded with Retry-After: 1
	FaultServerError                    // 500
	FaultGarbage                        // 502 with 256 KiB of random bytes for a body
	FaultResetAfterHeaders              // 200 headers and a few bytes, then the connection is reset
	FaultSlowHeaders                    // headers only after 300ms
)

// Account is the limits of one account.
type Account struct {
	// MaxInFlight caps requests in flight (DeepSeek mode); 0 means none.
	MaxInFlight int
	// RPM and TPM size the buckets (OpenAI mode); 0 means none.
	RPM, TPM int
}

// Key is how the server treats one secret.
type Key struct {
	// Account names the key's account; "" makes the key its own account.
	Account string
	// Fault is the key's permanent condition, FaultNone for a good key.
	Fault Fault
	// QueueFor makes the key's streams send only ": keep-alive" comments,
	// every 20ms, for this long before their first data line, as DeepSeek
	// does while a request waits in its queue.
	QueueFor time.Duration
	// EmptyAnswers makes the key's non-streamed answers a 200 whose body
	// is only white space, a known DeepSeek failure.
	EmptyAnswers bool
	// BreakAfterFrames, when positive, makes the key's streams reset their
	// connection after that many content chunks (data lines of a chat
	// stream, content_block_delta events of a Messages stream).
	BreakAfterFrames int
}

// Outage makes an account fail from Start to End after the server
// starts: with Status (such as 503, or 429), or by resetting the
// connection when Status is 0. Outages are checked after a key's
// permanent fault and an unknown model; the first on wins.
type Outage struct {
	// Account names the account that fails; "" makes every account fail,
	// a provider-wide outage.
	Account string
	// Start and End bound the outage, as times since the server started.
	Start, End time.Duration
	// Status is the status of every answer during the outage; 0 resets
	// the connections instead.
	Status int
	// RetryAfter, when positive, puts a Retry-After header, in whole
	// seconds rounded up, on the outage's answers: with Status 429 it
	// simulates "every request answers 429 with Retry-After: 30".
	RetryAfter time.Duration
}

// Config describes the simulated provider.
type Config struct {
	// Mode is how accounts are limited.
	Mode Mode
	// Accounts holds the limits of accounts by name; an account not in it
	// has no limits.
	Accounts map[string]Account
	// Keys maps secrets to their behaviour; any other secret gets a 401.
	Keys map[string]Key
	// Outages are the windows in which accounts fail.
	Outages []Outage

	// Latency is how long a non-streamed answer takes, plus up to Jitter.
	Latency, Jitter time.Duration

	// ErrorRate is the share of requests answered 500; ResetRate the share
	// whose connection is reset before any answer.
	//
	// The random faults are drawn after a key's permanent fault, an
	// unknown model and outages, and before the account's limits, in this
	// order: reset, error, rate limit, overloaded. A rate of 0 draws
	// nothing from the random source, so turning one on leaves the others'
	// draws as they were.
	ErrorRate, ResetRate float64
	// RateLimitRate is the share of requests answered at once with a bare
	// 429, whatever the load: the same answer as DeepSeek's concurrency
	// 429, with no Retry-After and no rate-limit headers. Such 429s count
	// in Counters.RateLimited and Counters.RandomRateLimited.
	RateLimitRate float64
	// OverloadedRate is the share of requests answered 529 overloaded_error,
	// as Anthropic does when its servers are overloaded. Such answers
	// count in Counters.ServerErrors and Counters.Overloaded.
	OverloadedRate float64

	// StreamKeepAlives is how many ": keep-alive" comments a stream sends
	// before its first data frame.
	StreamKeepAlives int
	// KeepAliveEvery is the time before each of the StreamKeepAlives.
	KeepAliveEvery time.Duration
	// StreamChunks is how many content chunks a stream sends (at least 1).
	StreamChunks int
	// ChunkEvery is the time before each content chunk.
	ChunkEvery time.Duration

	// Models, when not empty, are the only model names the server knows:
	// a request naming another gets a 404 model_not_found, after its key's
	// permanent fault and before outages. GET /models lists them, or a
	// default list when there are none.
	Models []string

	// Seed seeds the server's random source.
	Seed uint64
}
