package keypool

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors. Every error keypool returns either is one of these or
// wraps one, so errors.Is works on all of them.
var (
	// ErrNoKeys is returned by New when it is given no keys.
	ErrNoKeys = errors.New("keypool: no keys")
	// ErrInvalidConfig is wrapped by every *ConfigError.
	ErrInvalidConfig = errors.New("keypool: invalid configuration")
	// ErrNoKeyAvailable means no key can serve the request: every key is
	// disabled, or none serves the requested model, or none may be sent to
	// the request's host.
	ErrNoKeyAvailable = errors.New("keypool: no key can serve this request")
	// ErrWaitTimeout means the request waited the pool's maximum wait (see
	// WithMaxWait) for a key, or no key frees up before the request's
	// deadline. The *WaitError that wraps it says when the earliest key
	// frees up.
	ErrWaitTimeout = errors.New("keypool: timed out waiting for a key")
	// ErrBodyTooLarge means a request body without GetBody was larger than
	// the limit set by WithMaxBodyBytes, so it could not be kept for retries.
	ErrBodyTooLarge = errors.New("keypool: request body too large to replay")
	// ErrRequestBody means the caller's request body could not be read or
	// replayed: its Read or GetBody failed, or it was shorter or longer
	// than its ContentLength. The request fails at once and no key is
	// blamed; the error wraps the cause.
	ErrRequestBody = errors.New("keypool: request body")
	// ErrEmptyAnswer is an attempt's error when a 200 JSON answer's body
	// was only white space: DeepSeek's answer when it gives up on a
	// queued request. Such an answer is retried.
	ErrEmptyAnswer = errors.New("keypool: the upstream answered 200 with an empty body")
	// ErrFirstTokenTimeout is an attempt's error when a stream sent only
	// keep-alive comments for longer than WithFirstTokenTimeout.
	ErrFirstTokenTimeout = errors.New("keypool: no data from the stream before the first-token timeout")
	// ErrInvalidRequest means the request cannot be sent as it is: no URL
	// or Header, a scheme other than http or https, no host, a bad method,
	// header name or value. It fails at once and no key is blamed.
	ErrInvalidRequest = errors.New("keypool: invalid request")
	// ErrUnknownKey is returned by the Pool methods that take a key name
	// when no key has that name.
	ErrUnknownKey = errors.New("keypool: no key with that name")
)

// ConfigError reports a bad key given to New. It names the key by its
// position and its Name or masked secret, never by the secret itself.
type ConfigError struct {
	Index   int    // position of the key in the list given to New
	Key     string // the key's Name, or its masked secret
	Problem string // what is wrong
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("keypool: key #%d (%s): %s", e.Index, e.Key, e.Problem)
}

// Unwrap returns ErrInvalidConfig.
func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// WaitError reports that a request gave up waiting for a key.
type WaitError struct {
	// Waited is how long the request waited.
	Waited time.Duration
	// Earliest is the earliest time a key was known to free up, or the
	// zero time when keys were only busy (waiting for requests in flight
	// to finish) or none will free up.
	Earliest time.Time
	// Err is the context's error, or ErrWaitTimeout.
	Err error
}

func (e *WaitError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "keypool: gave up waiting for a key after %v: %v", e.Waited.Round(time.Millisecond), e.Err)
	if !e.Earliest.IsZero() {
		fmt.Fprintf(&b, " (earliest key frees up at %s)", e.Earliest.Format(time.RFC3339Nano))
	}
	return b.String()
}

// Unwrap returns the context's error or ErrWaitTimeout.
func (e *WaitError) Unwrap() error { return e.Err }

// Timeout reports whether the wait ended at a deadline: the context's, or
// the pool's maximum wait. With Temporary it makes a *WaitError a
// net.Error, so that code written for net/http's timeouts (os.IsTimeout,
// url.Error.Timeout) recognises it.
func (e *WaitError) Timeout() bool { return isTimeout(e.Err) }

// Temporary is Timeout; net.Error requires it.
func (e *WaitError) Temporary() bool { return e.Timeout() }

func isTimeout(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrWaitTimeout)
}

// Attempt records one try of a request on one key.
type Attempt struct {
	Key    string // the key's Name
	Status int    // the upstream's HTTP status, or 0 if no response came
	Err    error  // the transport error, if no response came
}

func (a Attempt) String() string {
	if a.Err != nil {
		return fmt.Sprintf("%s: %v", a.Key, a.Err)
	}
	return fmt.Sprintf("%s: HTTP %d", a.Key, a.Status)
}

// AttemptsError is returned when a request fails without an upstream
// response to hand back. It lists every attempt and the reason it stopped.
// errors.Is and errors.As see through it to the reason and to each
// attempt's error.
type AttemptsError struct {
	Attempts []Attempt
	// Err is why no further attempt was made: a *WaitError, the context's
	// error, ErrNoKeyAvailable, or the last attempt's error.
	Err error
}

func (e *AttemptsError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "keypool: request failed after %d attempt(s)", len(e.Attempts))
	for i, a := range e.Attempts {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(a.String())
	}
	if e.Err != nil && (len(e.Attempts) == 0 || e.Err != e.Attempts[len(e.Attempts)-1].Err) {
		fmt.Fprintf(&b, "; then: %v", e.Err)
	}
	return b.String()
}

// Timeout reports whether the request ended at a deadline: its context's,
// or the pool's maximum wait. With Temporary it makes an *AttemptsError a
// net.Error, as net/http's own errors for a passed deadline are.
func (e *AttemptsError) Timeout() bool { return isTimeout(e.Err) }

// Temporary is Timeout; net.Error requires it.
func (e *AttemptsError) Temporary() bool { return e.Timeout() }

// Unwrap returns the final reason and every attempt's error.
func (e *AttemptsError) Unwrap() []error {
	errs := make([]error, 0, len(e.Attempts)+1)
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	for _, a := range e.Attempts {
		if a.Err != nil {
			errs = append(errs, a.Err)
		}
	}
	return errs
}

// quoteShort quotes what an error repeats from the input, unless it is
// long enough to be a secret put in the wrong place.
func quoteShort(s string) string {
	if len(s) > 12 {
		return fmt.Sprintf("(%d bytes, not shown)", len(s))
	}
	return strconv.Quote(s)
}
