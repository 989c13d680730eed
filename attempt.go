package keypool

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// attempt is one try of a request on one key, and what came of it.
type attempt struct {
	lease   *lease
	sentTo  *url.URL       // the URL the attempt went to
	resp    *http.Response // nil when no answer came, or it was refused
	err     error          // the transport error, or why a 2xx was refused
	peek    []byte         // the start of an error body
	outcome Outcome
	took    time.Duration // from send to the answer's headers, when observed
	// callerFault is set when the attempt failed through the caller's
	// doing (its context ended, its body failed): nobody else is blamed.
	callerFault error
}

// attempt sends the request with l's key and judges the answer: the
// decision table, a look at the start of a 2xx body, the caller's
// classifier; then it applies the verdict to the key and its account.
func (c *call) attempt(l *lease) (a attempt) {
	a.lease = l
	defer a.letGoOnPanic()
	resp, err := c.timedSend(&a)
	if a.callerFault = c.faultOf(l, err); a.callerFault != nil {
		return a
	}
	var errText []byte
	if resp != nil && resp.StatusCode >= 400 {
		a.peek = peekBody(resp, errorPeekBytes)
		errText = decodedErrorBody(resp, a.peek)
	}
	a.outcome = c.classify(resp, err, errText, l)
	if resp != nil && resp.StatusCode >= 200 && resp.StatusCode < 300 && a.outcome.Retry == RetryNo {
		if bad := c.t.inspect(resp, l); bad != nil {
			discard(resp.Body)
			if a.callerFault = c.faultOf(l, bad); a.callerFault != nil {
				return a
			}
			// Not an answer to hand back.
			a.outcome, resp, err = rejectAnswer(bad, c.t.retryOnReset), nil, bad
		}
	}
	a.resp, a.err = resp, err
	if c.t.classifier != nil {
		a.outcome = c.t.judge(resp, err, a.outcome, l)
	}
	if c.observed {
		l.cause = causeOf(resp, err, errText)
	}
	c.t.pool.report(l, a.outcome, resp)
	return a
}

// timedSend sends a's attempt, timing it when the pool is observed.
func (c *call) timedSend(a *attempt) (*http.Response, error) {
	var start time.Time
	if c.observed {
		start = c.t.pool.clock.Now()
	}
	resp, sentTo, err := c.t.send(c, a.lease)
	if c.observed {
		a.took = c.t.pool.clock.Now().Sub(start)
	}
	a.sentTo = sentTo
	return resp, err
}

// classify applies the decision table to an answer of l's key, and
// blames a model name the key's ModelMap gave when its provider does not
// know it: the mapping is wrong then, not the caller's request.
func (c *call) classify(resp *http.Response, err error, errText []byte, l *lease) Outcome {
	o := classify(resp, err, errText, c.t.retryOnReset, c.t.pool.clock)
	if l.mapped != "" && resp != nil && isModelRefusal(resp.StatusCode, parseErrorBody(errText)) {
		o = Outcome{Effect: EffectModelNotFound, Retry: RetryNow}
	}
	return o
}

// causeOf describes an attempt's answer in a few words, for observers:
// its status and the provider's error code ("401 invalid_api_key"), or
// the transport's error. A code that is not a short identifier is left
// out: error bodies are the provider's text, and may quote anything.
func causeOf(resp *http.Response, err error, errText []byte) string {
	if resp == nil {
		if err != nil {
			return err.Error()
		}
		return "no answer"
	}
	cause := strconv.Itoa(resp.StatusCode)
	if err != nil {
		return cause + ": " + err.Error()
	}
	e := parseErrorBody(errText)
	code := e.Code
	if code == "" || code == cause {
		code = e.Type
	}
	if isIdentifier(code) {
		cause += " " + code
	}
	return cause
}

// isIdentifier reports whether s is a short run of letters, digits and
// "_.-", as error codes are.
func isIdentifier(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// letGoOnPanic lets go of the key's slot and the answer's connection
// when the caller's code, which runs during an attempt (GetBody, the
// classifier), panics; then the panic goes on.
func (a *attempt) letGoOnPanic() {
	if p := recover(); p != nil {
		if a.resp != nil {
			discard(a.resp.Body)
		}
		a.lease.release()
		panic(p)
	}
}

func (a *attempt) status() int {
	if a.resp == nil {
		return 0
	}
	return a.resp.StatusCode
}

// faultOf tells whether err, an attempt's error, is the caller's doing:
// its context ended, or its body could not be read or replayed.
func (c *call) faultOf(l *lease, err error) error {
	if err == nil {
		return nil
	}
	if ctxErr := c.ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	if errors.Is(err, ErrRequestBody) {
		return err
	}
	if bad := checkRequestLine(c.req); bad != nil {
		return bad
	}
	return l.sent.fault()
}

// classifierReadMax bounds what a classifier may read of a body and still
// leave it whole for the caller.
const classifierReadMax = 1 << 20

// judge lets the caller's classifier have the last word. It sees the
// whole body, bytes read ahead included; what it reads, up to
// classifierReadMax, is put back for the caller.
func (t *Transport) judge(resp *http.Response, err error, o Outcome, l *lease) Outcome {
	if resp == nil || resp.Body == nil || resp.Body == http.NoBody {
		return t.classifier(resp, err, o)
	}
	rec := &recordingBody{rc: l.takeAhead(resp.Body), limit: classifierReadMax}
	resp.Body = rec
	o = t.classifier(resp, err, o)
	resp.Body = rec.rewound()
	return o
}

// send makes one attempt on a shallow copy of the caller's request with
// l's key, or with no key at all when l is nil. It returns where the
// attempt went.
func (t *Transport) send(c *call, l *lease) (*http.Response, *url.URL, error) {
	req := c.req
	out := new(http.Request)
	*out = *req // keeps the context; every field changed below is replaced, not modified
	if err := c.setBody(out, l); err != nil {
		return nil, req.URL, err
	}
	if l == nil {
		out.Header = stripCredentials(req.Header, 0, t.pool.snap.Load().ownHeaders)
		resp, err := t.base.RoundTrip(out)
		return resp, out.URL, err
	}
	k := l.key
	out.Header = t.headerFor(req.Header, k)
	if k.target != nil && !c.redirect {
		out.URL = rebase(req.URL, k.target)
		out.Host = ""
	}
	k.requests.Add(1)
	l.sending()
	resp, err := t.base.RoundTrip(out)
	if resp == nil && err == nil {
		err = fmt.Errorf("keypool: the base RoundTripper (%T) returned neither a response nor an error", t.base)
	}
	if resp == nil || !isStreaming(resp) {
		l.providerDone()
	}
	return normalizeResponse(resp), out.URL, err
}

// setBody gives out, an attempt with l's key (or none), its body: the
// caller's, or a copy with the model renamed when the key's ModelMap
// renames it. The lease notes how the body is read.
func (c *call) setBody(out *http.Request, l *lease) error {
	if l != nil {
		if l.key.mapsModel(c.need.model) {
			l.mapped = c.need.model
		}
		if b := c.bodyFor(l.key); b != nil {
			c.body.close() // the caller's Body, unread: the copy replaces it
			l.sent.rc, out.GetBody = renamedBody(b)
			l.sent.length = int64(len(b))
			out.Body, out.ContentLength = &l.sent, l.sent.length
			return nil
		}
	}
	rc, err := c.body.next()
	if err != nil {
		return err
	}
	out.Body, out.GetBody = rc, c.body.getBody
	if rc != nil && l != nil {
		l.sent.rc, l.sent.length = rc, c.req.ContentLength
		out.Body = &l.sent
	}
	return nil
}

// normalizeResponse makes a base transport's answer safe to use, as
// http.Client does: a response with no Header or Body gets empty ones.
func normalizeResponse(resp *http.Response) *http.Response {
	if resp == nil {
		return nil
	}
	if resp.Header == nil {
		resp.Header = http.Header{}
	}
	if resp.Body == nil {
		resp.Body = http.NoBody
	}
	return resp
}

// credentialHeaders are removed from every request before the key's own
// header is set, so that a client's placeholder key never goes upstream.
var credentialHeaders = [...]string{"Authorization", "Api-Key", "X-Api-Key"}

// stripCredentials copies h without its credential headers, nor those
// that keys of the pool name (Key.Header), leaving room for extra more.
func stripCredentials(h http.Header, extra int, own []string) http.Header {
	out := make(http.Header, len(h)+extra)
	for name, v := range h {
		if !isCredentialHeader(name) && !isOwnHeader(name, own) {
			out[name] = v // shared, never modified: only the map is ours
		}
	}
	return out
}

// isOwnHeader reports whether name is one of own, in any case.
func isOwnHeader(name string, own []string) bool {
	for _, o := range own {
		if strings.EqualFold(name, o) {
			return true
		}
	}
	return false
}

// isCredentialHeader reports whether name is one of credentialHeaders,
// in any case: a client may fill the map without canonical names.
func isCredentialHeader(name string) bool {
	if name == "" || (name[0]|0x20 != 'a' && name[0]|0x20 != 'x') {
		return false // the common case, decided by the first byte
	}
	for _, c := range credentialHeaders {
		if len(name) == len(c) && strings.EqualFold(name, c) {
			return true
		}
	}
	return false
}

// headerFor is the header of an attempt with k: h without credentials,
// and k's secret in k's header, or as k's auth style (or else the
// transport's) says.
func (t *Transport) headerFor(h http.Header, k *keyState) http.Header {
	out := stripCredentials(h, 1, t.pool.snap.Load().ownHeaders)
	if k.secretName != "" {
		out[k.secretName] = k.secretHeader
		return out
	}
	style := k.cfg.Auth
	if style == AuthDefault {
		style = t.auth
	}
	switch style {
	case AuthAPIKey:
		out["Api-Key"] = k.secretHeader
	case AuthXAPIKey:
		out["X-Api-Key"] = k.secretHeader
	default:
		out["Authorization"] = k.bearerHeader
	}
	return out
}

// sentBody is the request body of one attempt as the base transport
// reads it. It notes how the caller's body behaved, so that a failure
// caused by the caller's body is not blamed on a key. The base transport
// may read it from another goroutine.
type sentBody struct {
	rc     io.ReadCloser
	length int64 // as declared: ContentLength, or the rewritten body's
	mu     sync.Mutex
	n      int64 // bytes read
	eof    bool
	err    error // the first read error other than io.EOF
}

func (b *sentBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.mu.Lock()
	b.n += int64(n)
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil && b.err == nil:
		b.err = err
	}
	b.mu.Unlock()
	return n, err
}

func (b *sentBody) Close() error { return b.rc.Close() }

// fault returns why the caller's body failed the attempt, or nil: a
// read error, or a length that is not the declared one.
func (b *sentBody) fault() error {
	contentLength := b.length
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.rc == nil:
		return nil
	case b.err != nil:
		return fmt.Errorf("%w: reading it failed: %w", ErrRequestBody, b.err)
	case contentLength > 0 && (b.n > contentLength || b.eof && b.n != contentLength):
		return fmt.Errorf("%w: it holds %d bytes but ContentLength is %d", ErrRequestBody, b.n, contentLength)
	}
	return nil
}
