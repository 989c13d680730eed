package keypool

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Effect is what an attempt's outcome says about the key that made it.
type Effect int

const (
	// EffectOK: the key works. The response is a success, or a refusal of
	// the request itself (400, 404, 422) that another key would repeat.
	EffectOK Effect = iota
	// EffectRateLimited: a 429 for rate. The key's account cools down for
	// Outcome.Wait, or for the pool's default cooldown when it is 0.
	EffectRateLimited
	// EffectKeyRevoked: a 401 or 403. The key is disabled.
	EffectKeyRevoked
	// EffectAccountExhausted: a 402, or a 429 saying the quota or balance
	// is gone. Every key of the account is disabled.
	EffectAccountExhausted
	// EffectFailure: the provider failed (5xx, 408, 409, 529, a broken
	// connection). Repeated failures eject the key for a while, and the
	// request goes to a lower tier at once if one can serve it (see
	// Key.Priority).
	EffectFailure
	// EffectModelNotFound: a 400, 404 or 422 saying that the model the
	// key's ModelMap named does not exist at its provider. The key stops
	// serving that model for the time WithDisableFor sets (KeyStats.
	// RefusedModels lists it), and the request goes to another key. It
	// means nothing for an attempt whose model no ModelMap renamed.
	EffectModelNotFound
)

// String names the effect as its constant does, without "Effect".
func (e Effect) String() string {
	switch e {
	case EffectOK:
		return "ok"
	case EffectRateLimited:
		return "rate_limited"
	case EffectKeyRevoked:
		return "key_revoked"
	case EffectAccountExhausted:
		return "account_exhausted"
	case EffectFailure:
		return "failure"
	case EffectModelNotFound:
		return "model_not_found"
	}
	return "Effect(" + strconv.Itoa(int(e)) + ")"
}

// RetryMode is whether and how an attempt is retried.
type RetryMode int

const (
	// RetryNo hands the response or error to the caller.
	RetryNo RetryMode = iota
	// RetryNow retries at once on another key.
	RetryNow
	// RetryBackoff retries after a backoff, preferring another key.
	RetryBackoff
)

// String names the mode as its constant does, without "Retry".
func (r RetryMode) String() string {
	switch r {
	case RetryNo:
		return "no"
	case RetryNow:
		return "now"
	case RetryBackoff:
		return "backoff"
	}
	return "RetryMode(" + strconv.Itoa(int(r)) + ")"
}

// Outcome is the judgement of one attempt: what it means for the key, and
// whether to retry. WithClassifier lets callers change it.
type Outcome struct {
	Effect Effect
	Retry  RetryMode
	// Wait is how long the account cools down, for EffectRateLimited; 0
	// means the pool's default cooldown.
	Wait time.Duration
}

// rejectAnswer is the outcome of a 2xx answer that inspect refused: a
// stream still queued is an overload of the account (it lowers a learned
// limit, or cools the account down); an empty or broken answer is a
// provider failure. Nothing reached the caller, so both are retried.
func rejectAnswer(why error, retryOnReset bool) Outcome {
	if errors.Is(why, ErrFirstTokenTimeout) {
		return Outcome{Effect: EffectRateLimited, Retry: RetryNow}
	}
	if errors.Is(why, ErrEmptyAnswer) || retryOnReset {
		return Outcome{Effect: EffectFailure, Retry: RetryNow}
	}
	return Outcome{Effect: EffectFailure, Retry: RetryNo}
}

// classify applies the decision table to one attempt: the
// response (with the first bytes of its body in errBody, for errors) or
// the transport error. c is read only to turn an HTTP-date into a wait.
func classify(resp *http.Response, err error, errBody []byte, retryOnReset bool, c clock) Outcome {
	if err != nil {
		if nothingSent(err) || retryOnReset {
			return Outcome{Effect: EffectFailure, Retry: RetryNow}
		}
		return Outcome{Effect: EffectFailure, Retry: RetryNo}
	}
	o := classifyStatus(resp, errBody, c)
	switch header(resp.Header, "X-Should-Retry") {
	case "true":
		if o.Retry == RetryNo && resp.StatusCode >= 400 {
			o.Retry = RetryBackoff
		}
	case "false":
		o.Retry = RetryNo
	}
	return o
}

func classifyStatus(resp *http.Response, errBody []byte, c clock) Outcome {
	switch code := resp.StatusCode; {
	case code < 400:
		return Outcome{Effect: EffectOK, Retry: RetryNo}
	case code == http.StatusUnauthorized, code == http.StatusForbidden:
		return Outcome{Effect: EffectKeyRevoked, Retry: RetryNow}
	case code == http.StatusPaymentRequired:
		return Outcome{Effect: EffectAccountExhausted, Retry: RetryNow}
	case code == http.StatusTooManyRequests:
		if parseErrorBody(errBody).quotaExhausted() {
			return Outcome{Effect: EffectAccountExhausted, Retry: RetryNow}
		}
		wait, _ := retryAfter(resp.Header, c.Now())
		return Outcome{Effect: EffectRateLimited, Retry: RetryNow, Wait: wait}
	case code == http.StatusRequestTimeout, code == http.StatusConflict, code >= 500:
		return Outcome{Effect: EffectFailure, Retry: RetryBackoff}
	default:
		return Outcome{Effect: EffectOK, Retry: RetryNo}
	}
}

// nothingSent reports whether err happened before any byte of the request
// could reach the upstream: a failed dial, DNS lookup or TLS handshake.
func nothingSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dnsErr *net.DNSError
	var hdrErr tls.RecordHeaderError
	var certErr *tls.CertificateVerificationError
	return errors.As(err, &dnsErr) || errors.As(err, &hdrErr) || errors.As(err, &certErr)
}
