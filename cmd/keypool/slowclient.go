package main

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// Slow clients. ReadHeaderTimeout bounds the request line and headers,
// IdleTimeout a kept-alive connection between requests. The body needs a
// deadline of its own: http.Server's ReadTimeout would also apply while a
// stream is being answered, and cancel it, because net/http reads ahead
// on the connection to notice a client that goes away. So the body gets a
// read deadline that is cleared once it has been read to its end.
//
// keypool reads a request's whole body before it takes a key, so a slow
// body never holds a key's slot; the deadline frees the connection too.

// limitBodyTime gives the client d to send r's body, if it has one.
func limitBodyTime(w http.ResponseWriter, r *http.Request, d time.Duration) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return // net/http already reads ahead: a deadline now would end the request
	}
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(d)) != nil {
		return
	}
	r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
}

// deadlineBody clears the read deadline when the body ends, and marks a
// read that hit it. net/http starts its read-ahead on the read that
// reaches the end, just before the deadline is cleared: a body that
// arrives within microseconds of its deadline may still see its request
// cancelled, which only a client that slow can cause.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !b.done {
		b.done = true
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return n, &slowBodyError{err}
		}
		b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// slowBodyError is a body read that hit its deadline.
type slowBodyError struct{ err error }

func (e *slowBodyError) Error() string { return "request body too slow: " + e.err.Error() }
func (e *slowBodyError) Unwrap() error { return e.err }
