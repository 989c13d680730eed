package keypool

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Transport is an http.RoundTripper that sends each request with a key
// from a Pool, waits when every key is busy, and fails over to another key
// on 429s, refused keys, provider failures and broken connections. Give
// it to any OpenAI-compatible client as its http.Client's Transport.
//
// The caller's request is never modified. A successful response holds
// its key's in-flight slot until its body is read to the end or closed,
// so a stream counts against MaxConcurrent for as long as it runs.
type Transport struct {
	pool         *Pool
	base         http.RoundTripper
	auth         AuthStyle
	maxAttempts  int
	maxBodyBytes int64
	classifier   func(*http.Response, error, Outcome) Outcome
	retryOnReset bool
	newBackOff   func() backoff.BackOff

	firstTokenTimeout time.Duration
	budget            *retryBudget
}

// NewTransport returns a Transport that sends requests with keys from p.
func NewTransport(p *Pool, opts ...TransportOption) *Transport {
	if p == nil {
		panic("keypool: NewTransport(nil)")
	}
	t := &Transport{
		pool:         p,
		base:         http.DefaultTransport,
		maxAttempts:  5,
		maxBodyBytes: 32 << 20,
		retryOnReset: true,
		newBackOff:   defaultBackOff,
		budget:       newRetryBudget(0.2, 1),
	}
	for _, o := range opts {
		o(t)
	}
	return t
}

// CloseIdleConnections closes the base transport's idle connections, if
// it has that method.
func (t *Transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// errorPeekBytes is how much of an error body is read to classify it and
// kept to hand back should every attempt fail.
const errorPeekBytes = 16 << 10

// drainBytes bounds how much of a discarded body is read so that its
// connection can be reused; past it the connection is closed instead.
const drainBytes = 64 << 10

// RoundTrip sends req with a key from the pool, retrying as DESIGN.md's
// decision table says. When attempts run out it returns the last upstream
// response, so clients report the upstream's own error; it returns an
// *AttemptsError only when there is no response to return.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body replayBody
	if err := body.init(req, t.maxBodyBytes); err != nil {
		return nil, err
	}
	ctx := req.Context()
	ar := acquireRequest{}
	redirect := req.Response != nil
	if redirect {
		// A secret may follow a redirect only to a host it belongs to.
		ar.origin, ar.host = originHost(req), req.URL.Host
	} else {
		ar.origin = req.URL.Host
	}
	if s := t.pool.snap.Load(); s.filtersModels || s.countsTokens {
		meta := parseRequestMeta(body.bytes(t.maxBodyBytes))
		ar.model, ar.tokens = meta.Model, meta.Tokens
	}

	t.budget.request(t.pool.clock.Now())
	var attempts []Attempt
	var last *http.Response // the latest upstream answer, buffered
	var bo backoff.BackOff
	charged := 0 // attempts that count against maxAttempts
	for n := 1; ; n++ {
		l, err := t.pool.acquire(ctx, &ar)
		if err != nil {
			if redirect && errors.Is(err, ErrNoKeyAvailable) {
				resp, err := t.send(req, nil, &body, true)
				if resp != nil {
					resp.Request = req
				}
				return resp, err
			}
			body.close()
			if last != nil && ctx.Err() == nil {
				return last, nil
			}
			return nil, &AttemptsError{Attempts: attempts, Err: err}
		}
		resp, err := t.send(req, l.key, &body, redirect)
		if err != nil && ctx.Err() != nil {
			l.release()
			attempts = append(attempts, Attempt{Key: l.key.name, Err: err})
			return nil, &AttemptsError{Attempts: attempts, Err: ctx.Err()}
		}
		var peek []byte
		if resp != nil && resp.StatusCode >= 400 {
			peek = peekBody(resp, errorPeekBytes)
		}
		o := classify(resp, err, peek, t.retryOnReset, t.pool.clock)
		if resp != nil && resp.StatusCode < 300 && o.Retry == RetryNo {
			if bad := t.inspect(resp, l); bad != nil {
				o, err = t.rejectAnswer(bad), bad
				discard(resp.Body)
				resp = nil // not an answer to hand back
			}
		}
		if t.classifier != nil {
			o = t.classifier(resp, err, o)
		}
		status := 0
		if resp != nil {
			status = resp.StatusCode
			t.resyncFromHeaders(resp, l.key)
		}
		t.pool.report(l, o, status)

		// 429s are not charged: each one lowers a limit or cools an
		// account down, so the next attempt waits for capacity instead.
		if o.Effect != EffectRateLimited {
			charged++
		}
		// Retries after provider failures come out of the retry budget, so
		// that an outage is not multiplied into a retry storm.
		final := o.Retry == RetryNo || charged >= t.maxAttempts || n >= 4*t.maxAttempts ||
			(o.Effect == EffectFailure && !t.budget.allow(t.pool.clock.Now()))
		if final {
			if resp != nil {
				return handOver(resp, req, l), nil
			}
			l.release()
			if last != nil {
				return last, nil
			}
			attempts = append(attempts, Attempt{Key: l.key.name, Err: err})
			return nil, &AttemptsError{Attempts: attempts, Err: err}
		}
		attempts = append(attempts, Attempt{Key: l.key.name, Status: status, Err: err})
		if resp != nil {
			last = keepForLater(resp, peek, req)
		}
		l.release()
		ar.tried = append(ar.tried, l.key)
		if o.Retry == RetryBackoff {
			if bo == nil {
				bo = t.newBackOff()
			}
			d := bo.NextBackOff()
			if d == backoff.Stop || !sleep(t.pool.clock, d, ctx.Done()) {
				body.close()
				if last != nil && ctx.Err() == nil {
					return last, nil
				}
				return nil, &AttemptsError{Attempts: attempts, Err: ctx.Err()}
			}
		}
	}
}

// rejectAnswer is the outcome of a 2xx answer that inspect refused: a
// stream still queued is an overload of the account (it lowers a learned
// limit, or cools the account down); an empty or broken answer is a
// provider failure. Nothing reached the caller, so both are retried.
func (t *Transport) rejectAnswer(why error) Outcome {
	if errors.Is(why, ErrFirstTokenTimeout) {
		return Outcome{Effect: EffectRateLimited, Retry: RetryNow}
	}
	if errors.Is(why, ErrEmptyAnswer) || t.retryOnReset {
		return Outcome{Effect: EffectFailure, Retry: RetryNow}
	}
	return Outcome{Effect: EffectFailure, Retry: RetryNo}
}

// send makes one attempt on a shallow copy of req with k's credentials,
// or with none when k is nil: a redirect to a host no key belongs to.
func (t *Transport) send(req *http.Request, k *keyState, body *replayBody, redirect bool) (*http.Response, error) {
	rc, err := body.next()
	if err != nil {
		return nil, err
	}
	out := new(http.Request)
	*out = *req // keeps the context; every field changed below is replaced, not modified
	out.Body = rc
	out.GetBody = body.getBody
	if k == nil {
		out.Header = stripCredentials(req.Header, 0)
		return t.base.RoundTrip(out)
	}
	out.Header = t.headerFor(req.Header, k)
	if k.target != nil && !redirect {
		out.URL = rebase(req.URL, k.target)
		out.Host = ""
	}
	return t.base.RoundTrip(out)
}

// credentialHeaders are removed from every request before the key's own
// header is set, so that a client's placeholder key never goes upstream.
var credentialHeaders = [...]string{"Authorization", "Api-Key", "X-Api-Key"}

func stripCredentials(h http.Header, extra int) http.Header {
	out := make(http.Header, len(h)+extra)
	for name, v := range h {
		if name != credentialHeaders[0] && name != credentialHeaders[1] && name != credentialHeaders[2] {
			out[name] = v // shared, never modified: only the map is ours
		}
	}
	return out
}

func (t *Transport) headerFor(h http.Header, k *keyState) http.Header {
	out := stripCredentials(h, 1)
	switch t.auth {
	case AuthAPIKey:
		out["Api-Key"] = k.secretHeader
	case AuthXAPIKey:
		out["X-Api-Key"] = k.secretHeader
	default:
		out["Authorization"] = k.bearerHeader
	}
	return out
}

// rebase sends u to base: base's scheme and host, base's path before u's.
func rebase(u, base *url.URL) *url.URL {
	out := *u
	out.Scheme, out.Host, out.User = base.Scheme, base.Host, nil
	if prefix := strings.TrimSuffix(base.Path, "/"); prefix != "" {
		out.Path = prefix + u.Path
		if u.RawPath != "" {
			out.RawPath = strings.TrimSuffix(base.EscapedPath(), "/") + u.RawPath
		}
	}
	return &out
}

// originHost is the host of the first request of a redirect chain.
func originHost(req *http.Request) string {
	for req.Response != nil && req.Response.Request != nil && req.Response.Request != req {
		req = req.Response.Request
	}
	return req.URL.Host
}

// handOver gives resp to the caller with its body tied to the lease and
// its Request set to the caller's own, which holds no secret.
func handOver(resp *http.Response, req *http.Request, l *lease) *http.Response {
	resp.Request = req
	if resp.Body == nil || resp.Body == http.NoBody {
		l.release()
		return resp
	}
	l.body = resp.Body
	resp.Body = l
	return resp
}

// peekBody reads up to limit bytes of resp's body and puts them back in
// front of the rest, so that the body still reads whole.
func peekBody(resp *http.Response, limit int) []byte {
	if resp.Body == nil || resp.Body == http.NoBody {
		return nil
	}
	buf, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)))
	rest := io.Reader(resp.Body)
	if err != nil {
		rest = errReader{err} // the caller meets the error where the peek did
	}
	resp.Body = &peekedBody{Reader: io.MultiReader(bytes.NewReader(buf), rest), rc: resp.Body}
	return buf
}

type peekedBody struct {
	io.Reader
	rc io.ReadCloser
}

func (b *peekedBody) Close() error { return b.rc.Close() }

// errReader fails every read with err.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// keepForLater keeps an error response to hand back should every attempt
// fail: its status, headers and the peeked start of its body. The rest is
// drained (bounded) and the body closed so the connection is reused.
func keepForLater(resp *http.Response, peek []byte, req *http.Request) *http.Response {
	discard(resp.Body)
	kept := new(http.Response)
	*kept = *resp
	kept.Body = io.NopCloser(bytes.NewReader(peek))
	kept.ContentLength = int64(len(peek))
	kept.Header = resp.Header.Clone()
	kept.Header.Del("Content-Encoding")
	kept.Header.Set("Content-Length", strconv.Itoa(len(peek)))
	kept.Request = req
	kept.TLS = nil
	return kept
}

// discard drains up to drainBytes of a body and closes it.
func discard(rc io.ReadCloser) {
	if rc == nil {
		return
	}
	_, _ = io.CopyN(io.Discard, rc, drainBytes)
	rc.Close()
}
