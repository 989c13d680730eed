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
// # The life of a request
//
//  1. Prepare. The body is replayed from Request.GetBody (go-openai and
//     openai-go set it) with no copy, or read once, up to WithMaxBodyBytes.
//     The model and a token estimate are read from a JSON body only when
//     some key filters on models or has a TPM limit.
//  2. Acquire a lease: a key of the highest tier (Key.Priority) that can
//     serve the request, picked by smooth weighted round robin among the
//     keys that are not disabled, cooling down, ejected or at a limit
//     (RPM, TPM, requests in flight, per key or per Account), avoiding
//     keys this request already tried. When none is free the request
//     waits, in arrival order, bounded by its context and by WithMaxWait,
//     which bounds all the waiting of one request together.
//  3. Send a shallow copy of the request with the key's credential in
//     place of the client's own, and its model renamed in a copy of the
//     body when the key's ModelMap says so. The caller's request is never
//     modified.
//  4. Classify the answer by the table below, apply its effect to the key
//     and its account, and either hand it over or retry on another key.
//  5. Hand over. The lease, and so the key's in-flight slot, is held until
//     the response body is read to its end or closed, so a stream counts
//     against MaxConcurrent for as long as it runs. From then on nothing
//     is replayed.
//
// # The decision table
//
// What an attempt's answer means, and what keypool does about it
// (classify.go decides, effects.go applies):
//
//	upstream signal                 scope        action
//	2xx                             -            success: hand over; settle TPM from usage
//	400, 404, 422                   the request  hand over as is; no retry
//	400, 404, 422 model_not_found   the key's    stop that mapping for the key (WithDisableFor;
//	  after a ModelMap renamed it     mapping    KeyStats.RefusedModels); retry on another key at once
//	401, 403                        the key      disable the key (WithDisableFor); retry on another at once
//	402; 429 insufficient_quota     the account  disable every key of the account; retry on another at once
//	429 with a retry hint           the account  cool down as retry-after-ms, Retry-After or
//	                                             x-ratelimit-reset-* says; retry on another at once,
//	                                             on a lower tier if no key of this one can serve
//	429 without a hint              the account  retry on another at once; if a cap on requests in
//	                                             flight explains it, lower the learned limit, else
//	                                             leave the limit alone and pause the account only
//	                                             after 5 such 429s in a row (WithCooldown/8, doubling)
//	408, 409, 5xx, 529              the key      jittered backoff, then another key; repeated failures
//	                                             eject the key (WithEjection), probed every cooldown;
//	                                             with a lower tier that can serve, no backoff and no
//	                                             retry budget: the next attempt goes there at once
//	dial, DNS or TLS error          the key      retry on another key at once
//	reset after the request went    the key      retry on another key (WithRetryOnReset)
//	200 JSON of only white space    the key      a failure: retry on another key
//	a stream queued past            the account  an overload, as a bare 429: retry on another key
//	  WithFirstTokenTimeout
//	x-should-retry: true / false    -            obeyed over the status
//	101 Switching Protocols         -            hand over at once, with a writable body
//	the caller's context ends,      the caller   end the request with that error: no retry, no
//	  or its body fails                          blame on any key
//	a response handed over          -            never replayed
//
// When attempts run out (WithMaxAttempts; 429s are not counted, up to
// four times that many attempts in all), the retry budget is spent
// (WithRetryBudget) or no key frees up within WithMaxWait, the caller
// gets the last upstream answer, marked "X-Should-Retry: false" so that
// the client's own retries do not multiply keypool's. An *AttemptsError
// listing every attempt comes only when there is no answer at all.
//
// A key that has never answered, or comes back from ejection,
// disablement or Enable, takes one request at a time until one succeeds,
// so a revoked key costs one failed request, not a burst. WithClassifier
// overrides any verdict.
//
// # Provider tiers
//
// Keys of a higher Priority serve first; those of one priority share
// traffic by weight. A lower tier gets a request only when no key of the
// higher ones can serve it: every one is disabled, ejected or cooling
// down, or does not serve its model, or the request already failed there
// with a provider failure (5xx, a broken connection), or none of them
// frees up before the request's wait ends. A request goes to a key it
// has not tried, on any tier, before one it tried, so 429s or refusals
// on every key of a tier move it on at once. WithSpillAfter lets a
// request that waited that long for busy keys go lower too.
// Traffic returns to the higher tier as soon as one of its keys can
// serve: a cooldown ends, or an ejected key answers its probe. A second
// provider's keys name the models their way (Key.ModelMap) and send
// their secret their way (Key.Auth, Key.Header):
//
//	keys := []keypool.Key{
//		{Secret: deepseekKey, BaseURL: "https://api.deepseek.com", Priority: 1},
//		{Secret: openrouterKey, BaseURL: "https://openrouter.ai/api",
//			ModelMap: map[string]string{"deepseek-chat": "deepseek/deepseek-chat"}},
//	}
//
// # Limits
//
// Each account's in-flight limit is learned from bare 429s when the
// provider does not say it (WithAdaptiveLimits). It grows from 1, one per
// success, until the first 429 that a cap explains: one sent with more in
// flight than the provider served (twice) lately, and, when the provider
// also refuses at random where it does serve, one of a run long enough to
// rule chance out. Such a 429 sent with n in flight lowers the limit below
// n, and the limit then tries n again only now and then: at once, then
// after 0.5 s, and twice as long after each probe that fails, up to 8 s.
// A cap that holds costs one 429 per 8 s per account; a cap that rises is
// found within 8 s and a few successes. 429s no cap explains leave the
// limit alone. Stats shows the limit, the level that overloaded and when
// the next probe is due. TPM is reserved before each model request and
// settled from the usage the answer reports.
// x-ratelimit-remaining-* headers lower the RPM and TPM budgets, so
// limits the provider states are kept before a 429, not learned from one.
//
// # Replicas
//
// Replicas of a service that hold the same keys share their accounts'
// state through a Store (WithStore; package redisstore keeps it in
// Redis): each slot the pool grants is confirmed by the store, and what
// one replica learns holds for all. When the store fails the pool keeps
// to its own limits (Pool.StoreErr says so) and no request fails.
//
// # Observing
//
// Every response keypool hands over names the key that served it and
// the attempts it took, in the Keypool-Key and Keypool-Attempts headers
// (WithResponseHeaders). WithObserver receives every attempt, every
// change of a key's or account's state with its cause, every change of a
// learned limit, every retry the retry budget refused and every request
// as it ends; WithLogger logs them through log/slog, and package
// keypoolprom exports them to Prometheus. Observers run on the request's
// goroutine with no keypool lock held.
//
// # Reconfiguration
//
// Keys can be added, removed, disabled and re-weighted while the pool
// serves (Pool.Add, Remove, Disable, Enable, SetWeight, SetLimits), and
// ParseKeys reads a key list from an environment variable or file.
//
// # Secrets
//
// A secret goes only to the scheme and host it belongs to (the key's
// BaseURL, or the request's own URL), never follows a redirect elsewhere
// or down from https to http, and never appears in errors, Stats or
// String: keys are named by their masked form, such as "sk-…abcd".
package keypool
