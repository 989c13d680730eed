package main

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// Slow clients. ReadHeaderTimeout bounds the request line and headers,
// IdleTimeout a kept-alive connection between requests, and ReadTimeout
// the whole request, body included. But net/http reads ahead on the
// connection once the body is read, to notice a client that goes away,
// and that read-ahead would also meet ReadTimeout and cancel an answer
// still streaming. So the read deadline is lifted as soon as the body has
// been read to its end, or at once for a request without a body.
//
// keypool reads a request's whole body before it takes a key, so a slow
// body never holds a key's slot; the deadline frees the connection too.

// liftReadDeadline lifts ReadTimeout's deadline once r's body is read.
func liftReadDeadline(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	if r.Body == nil || r.Body == http.NoBody {
		rc.SetReadDeadline(time.Time{})
		return
	}
	r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
}

// deadlineBody lifts the read deadline when the body ends, and marks a
// read that hit it. net/http starts its read-ahead on the read that
// reaches the end, just before the deadline is lifted: a body that
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
