// Package fakeupstream is a loopback server that behaves like real LLM
// providers under load, for keypool's tests, demo and benchmarks.
//
// # Endpoints
//
// POST on any path ending in /chat/completions is OpenAI's chat
// completions, as OpenAI and DeepSeek serve it. Azure OpenAI's
// /openai/deployments/{deployment}/chat/completions?api-version=... is
// served the same way; its deployment stands for the model when the body
// names none. POST /v1/messages is Anthropic's Messages API, answered in
// Anthropic's shape: its message, its stream events (message_start,
// content_block_start, ping, content_block_delta, content_block_stop,
// message_delta, message_stop), its errors (rate_limit_error on 429,
// overloaded_error on 529, and so on, in a body of type "error") and
// anthropic-ratelimit-* headers. GET on a path ending in /models
// lists Config.Models, or a default list, in OpenAI's shape, or
// Anthropic's when the request has an anthropic-version header. Any
// other request gets a 404.
//
// The secret may come as a bearer token, an api-key header (Azure) or an
// x-api-key header (Anthropic); Counters.AuthHeaders says which.
//
// # Modes
//
// The Mode decides how accounts are limited, on every endpoint. In
// DeepSeek mode an account caps requests in flight and answers any
// request over the cap with an immediate 429 that carries no Retry-After
// and no rate-limit headers. In OpenAI mode an account has RPM and TPM
// buckets, reports them in rate-limit headers, and answers 429 with
// Retry-After (and, on chat completions, Retry-After-Ms) when one is
// empty.
//
// # Faults
//
// A request meets, in this order: its key's permanent fault (revoked
// 401, forbidden 403, out of balance 402, out of quota 429
// insufficient_quota, rate limited, 500, garbage, a connection reset
// after the headers), an unknown model (404 model_not_found, when
// Config.Models is set), an outage of its account or of every account
// (a status, with Retry-After if asked, or connection resets, in a set
// time window), the random faults (connection resets, 500s, bare 429s
// and 529 overloaded, each at its rate), and last its account's limits.
// Randomness comes from one seeded source.
//
// # Streams
//
// Streams are sent as SSE: keep-alive comments first, if asked or while
// a key's requests are "queued", then the content chunks and, for chat
// completions, usage in the final chunk and [DONE]; for Messages, the
// input tokens in message_start and the output tokens in message_delta.
//
// # Tests
//
// Counters says what the server saw for each key. NewInMemory serves on
// in-memory pipes, so that tests can run it in a testing/synctest bubble,
// on virtual time.
package fakeupstream
