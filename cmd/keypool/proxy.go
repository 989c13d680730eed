package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keypool/keypool"
)

// unknownUpstream is where requests are aimed when KEYPOOL_UPSTREAM is
// unset. checkKeys then made sure every key has a BaseURL, which keypool
// puts in its place, so nothing is ever sent here; .invalid cannot
// resolve (RFC 2606) should that ever change.
var unknownUpstream = &url.URL{Scheme: "https", Host: "upstream.invalid"}

// clientOnlyHeaders never go upstream. The client's credentials are for
// the proxy; keypool sets the key's own. OpenAI-Organization and
// OpenAI-Project belong to a key too: a client's value that does not
// match the key's organization makes OpenAI answer 401, which would
// disable a good key, so a client could disable every key in turn.
// Accept-Encoding is dropped so that the upstream connection negotiates
// compression itself and bodies reach keypool decoded, where it reads
// their usage to settle TPM reservations. Upgrades are refused (see
// refusesUpgrade), and their headers dropped here as well.
var clientOnlyHeaders = []string{
	"Authorization", "Api-Key", "X-Api-Key", "Proxy-Authorization",
	"Openai-Organization", "Openai-Project",
	"Accept-Encoding", "Upgrade", "Connection",
}

// newProxy returns the reverse proxy that sends requests through rt, the
// keypool Transport, to upstream.
func newProxy(upstream *url.URL, rt http.RoundTripper, log *slog.Logger, maxBody int64) *httputil.ReverseProxy {
	if upstream == nil {
		upstream = unknownUpstream
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// The incoming Host and any absolute request URI are ignored:
			// only the path and query are the client's to choose.
			pr.SetURL(upstream)
			pr.Out.URL.User = nil
			pr.Out.Host = ""
			for _, h := range clientOnlyHeaders {
				delete(pr.Out.Header, h) // canonical already; Del would canonicalize again
			}
		},
		Transport: rt,
		// 0 flushes SSE (by its Content-Type) and answers of unknown
		// length after every write, so each event goes out as it arrives,
		// and lets an answer of known length go out in one write.
		FlushInterval: 0,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			proxyError(w, r, err, log, maxBody)
		},
		ErrorLog:   slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BufferPool: copyBuffers,
	}
}

// copyBuffers spares every response a fresh 32 KiB copy buffer, the
// ReverseProxy's default.
var copyBuffers = &bufferPool{pool: sync.Pool{New: func() any { return new([32 << 10]byte) }}}

type bufferPool struct{ pool sync.Pool }

func (b *bufferPool) Get() []byte  { return b.pool.Get().(*[32 << 10]byte)[:] }
func (b *bufferPool) Put(p []byte) { b.pool.Put((*[32 << 10]byte)(p)) }

// statusClientClosedRequest is nginx's status for a client that went
// away before the answer; it is only ever logged.
const statusClientClosedRequest = 499

// proxyError answers a request that got no upstream response with an
// OpenAI error and a status that says what happened. keypool's errors
// hold no secret; they are logged, and the client gets a generic message.
func proxyError(w http.ResponseWriter, r *http.Request, err error, log *slog.Logger, maxBody int64) {
	var (
		tooLarge *http.MaxBytesError
		slow     *slowBodyError
		wait     *keypool.WaitError
	)
	switch {
	case errors.As(err, &tooLarge) || errors.Is(err, keypool.ErrBodyTooLarge):
		writeAPIError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large",
			fmt.Sprintf("The request body is larger than the proxy's limit of %d bytes (KEYPOOL_MAX_BODY_BYTES).", maxBody))
		return
	case errors.As(err, &slow):
		w.Header().Set("Connection", "close")
		writeAPIError(w, http.StatusRequestTimeout, "invalid_request_error", "request_timeout",
			"The request body did not arrive in time.")
		return
	case r.Context().Err() == context.Canceled:
		w.WriteHeader(statusClientClosedRequest) // nobody is listening
		return
	case errors.Is(err, keypool.ErrNoKeyAvailable):
		log.Warn("no key can serve the request", "path", r.URL.Path, "err", err)
		writeAPIError(w, http.StatusServiceUnavailable, "server_error", "no_key_available",
			"No API key of the proxy can serve this request now: every key that serves its model is disabled or ejected.")
	case errors.As(err, &wait) && errors.Is(err, keypool.ErrWaitTimeout):
		log.Warn("gave up waiting for a key", "path", r.URL.Path, "err", err)
		if !wait.Earliest.IsZero() {
			secs := math.Ceil(time.Until(wait.Earliest).Seconds())
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(secs))))
		}
		writeAPIError(w, http.StatusGatewayTimeout, "server_error", "key_wait_timeout",
			"Every API key of the proxy stayed busy or rate-limited for as long as the request could wait.")
	case errors.Is(err, context.DeadlineExceeded):
		log.Warn("upstream request timed out", "path", r.URL.Path, "err", err)
		writeAPIError(w, http.StatusGatewayTimeout, "server_error", "upstream_timeout",
			"The upstream did not answer in time.")
	default:
		log.Warn("upstream request failed", "path", r.URL.Path, "err", err)
		writeAPIError(w, http.StatusBadGateway, "server_error", "upstream_error",
			"The proxy could not get an answer from the upstream.")
	}
}

// refusesUpgrade reports whether r asks to switch to a protocol the proxy
// does not carry, such as WebSocket: keypool holds a key's slot per
// request, not per connection. An h2c upgrade (curl --http2) is merely
// ignored, as net/http does, and the request is served over HTTP/1.1.
func refusesUpgrade(r *http.Request) bool {
	up := r.Header.Get("Upgrade")
	return up != "" && !strings.EqualFold(up, "h2c")
}

// proxyHandler checks what the reverse proxy cannot: the request's form,
// upgrades and the body's size; then proxies it.
func proxyHandler(rp http.Handler, maxBody int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodConnect || r.URL.Opaque != "" || !strings.HasPrefix(r.URL.Path, "/"):
			writeAPIError(w, http.StatusBadRequest, "invalid_request_error", "invalid_request",
				"The proxy serves paths such as POST /v1/chat/completions; it is not a forward proxy.")
			return
		case refusesUpgrade(r):
			writeAPIError(w, http.StatusNotImplemented, "invalid_request_error", "upgrade_not_supported",
				"The proxy does not carry WebSocket or other protocol upgrades.")
			return
		case r.ContentLength > maxBody:
			writeAPIError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large",
				fmt.Sprintf("The request body is larger than the proxy's limit of %d bytes (KEYPOOL_MAX_BODY_BYTES).", maxBody))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		rp.ServeHTTP(w, r)
	})
}
