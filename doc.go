// Package keypool spreads the requests of any OpenAI-compatible Go client
// over a weighted pool of API keys, in-process, with no gateway server.
//
// Wrap an http.Client's transport and hand the client to go-openai,
// openai-go or any other client that accepts one:
//
//	pool, err := keypool.New([]keypool.Key{
//		{Secret: os.Getenv("KEY_A"), MaxConcurrent: 500},
//		{Secret: os.Getenv("KEY_B"), MaxConcurrent: 500, Weight: 2},
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	cfg := openai.DefaultConfig("") // github.com/sashabaranov/go-openai
//	cfg.BaseURL = "https://api.deepseek.com/v1"
//	cfg.HTTPClient = &http.Client{Transport: keypool.NewTransport(pool)}
//	client := openai.NewClientWithConfig(cfg)
//
// From then on every request:
//
//   - goes to a key picked by smooth weighted round robin among the keys
//     that are not disabled, cooling down or at their limits (RPM, TPM,
//     requests in flight, per key or per Account);
//   - waits, in arrival order, when every key is busy, instead of failing,
//     bounded by its context and WithMaxWait;
//   - fails over at once to another key on a 429 (cooling the account
//     down for as long as Retry-After, retry-after-ms or x-ratelimit-reset
//     says), a 401/403 (disabling the key), a 402 or exhausted quota
//     (disabling the account), or a connection that could not be made;
//   - retries after a jittered backoff on 5xx, 408, 409 and 529,
//     preferring another key, and ejects a key that keeps failing;
//   - returns 400, 404 and 422 untouched, and once a response reaches the
//     caller it is never replayed, so a stream that has started is never
//     repeated;
//   - holds its key's in-flight slot until the response body is closed
//     or read to its end, so streams count against MaxConcurrent;
//   - learns each account's in-flight limit from bare 429s when the
//     provider does not say it (WithAdaptiveLimits), settles TPM
//     reservations from the usage the upstream reports, and can fail over
//     a stream still queued past WithFirstTokenTimeout;
//   - spends retries after provider failures from a budget of 20% of
//     recent requests (WithRetryBudget), so an outage is not amplified.
//
// Keys can be added, removed, disabled and re-weighted while the pool
// serves (Pool.Add, Remove, Disable, Enable, SetWeight, SetLimits), and
// ParseKeys reads a key list from an environment variable or file.
//
// When every attempt fails the caller gets the last upstream response, so
// clients report the provider's own error; an *AttemptsError, listing
// every attempt, comes only when there is no response at all.
//
// Secrets go only to the host they belong to (the key's BaseURL, or the
// request's own host) and never follow a redirect elsewhere. They never
// appear in errors, Stats or String: keys are named by their masked form,
// such as "sk-…abcd".
package keypool
