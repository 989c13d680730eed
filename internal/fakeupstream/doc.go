// Package fakeupstream is a loopback OpenAI-compatible server that behaves
// like real LLM providers under load, for keypool's tests, demo and
// benchmarks.
//
// In DeepSeek mode an account caps requests in flight and answers any
// request over the cap with an immediate 429 that carries no Retry-After
// and no rate-limit headers. In OpenAI mode an account has RPM and TPM
// buckets, reports them in x-ratelimit-* headers, and answers 429 with
// Retry-After when one is empty. Keys can be revoked (401), out of balance
// (402) or out of quota (429 insufficient_quota); accounts can have
// outages in set time windows; random 5xx and connection resets can be
// injected; streams are sent as SSE with keep-alive comments and usage in
// the final chunk. Randomness comes from one seeded source.
package fakeupstream
