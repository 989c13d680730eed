package main

import (
	"io"
	"net/http"
	"sync/atomic"
)

// singleKey sends every request with one key: the setup before keypool.
type singleKey struct {
	base   http.RoundTripper
	secret string
}

func (t *singleKey) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.Header.Set("Authorization", "Bearer "+t.secret)
	return t.base.RoundTrip(out)
}

// roundRobin is the naive multi-key setup of a simple gateway: keys in
// turn, and on a 429, 5xx or connection error an immediate retry on the
// next key, up to retries times. No limits, no cooldown, no waiting.
type roundRobin struct {
	base    http.RoundTripper
	secrets []string
	retries int
	next    atomic.Uint64
}

func (t *roundRobin) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		out := req.Clone(req.Context())
		if attempt > 0 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			out.Body = body
		}
		secret := t.secrets[t.next.Add(1)%uint64(len(t.secrets))]
		out.Header.Set("Authorization", "Bearer "+secret)
		resp, err := t.base.RoundTrip(out)
		failed := err != nil || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
		if !failed || attempt >= t.retries {
			return resp, err
		}
		if resp != nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
}
