package main

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// maxLoggedPath bounds the path written to the access log, so that a
// client cannot make log lines arbitrarily long.
const maxLoggedPath = 256

// accessLog logs one line per request: method, path (never the query,
// which may carry credentials), status, bytes written, duration and the
// client's address. Headers are never logged, so neither client tokens
// nor keys can reach the log.
func accessLog(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		defer func() {
			// A stream the client abandons ends in http.ErrAbortHandler,
			// which net/http expects to see: log the request, then
			// re-panic.
			p := recover()
			status := rec.status
			if status == 0 {
				status = http.StatusOK
				if p != nil {
					status = statusClientClosedRequest
				}
			}
			path := r.URL.Path
			if len(path) > maxLoggedPath {
				path = path[:maxLoggedPath] + "…"
			}
			log.LogAttrs(r.Context(), slog.LevelInfo, "request",
				slog.String("method", r.Method),
				slog.String("path", path),
				slog.Int("status", status),
				slog.Int64("bytes", rec.bytes),
				slog.Float64("ms", float64(time.Since(start).Microseconds())/1000),
				slog.String("remote", r.RemoteAddr),
				slog.Bool("aborted", p != nil))
			if p != nil {
				panic(p)
			}
		}()
		next.ServeHTTP(rec, r)
	})
}

// recorder notes the status and size of a response. It passes Flush
// through, which streaming needs, and unwraps for http.ResponseController.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 && status >= 200 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack is never used by the proxy, which refuses upgrades; it is here
// so that wrapping does not hide the capability.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h, ok := r.ResponseWriter.(http.Hijacker); ok {
		return h.Hijack()
	}
	return nil, nil, errors.New("keypool: connection cannot be hijacked")
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
