package keypool

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
)

var (
	// ErrEmptyAnswer is an attempt's error when a 200 answer's body was
	// only white space: DeepSeek's answer when it gives up on a queued
	// request. Such an answer is retried.
	ErrEmptyAnswer = errors.New("keypool: the upstream answered 200 with an empty body")
	// ErrFirstTokenTimeout is an attempt's error when a stream sent only
	// keep-alive comments for longer than WithFirstTokenTimeout.
	ErrFirstTokenTimeout = errors.New("keypool: no data from the stream before the first-token timeout")
)

// inspect looks at the start of a 2xx body before it goes to the caller,
// which is the last moment a retry is still safe. A JSON answer is read
// up to its first byte that is not white space, so that an empty answer
// can be retried; a stream, when a first-token timeout is set, is read up
// to its first data line. What is read is kept in the lease and served
// to the caller first. It returns nil when the response can be handed
// over, or why it must not be.
func (t *Transport) inspect(resp *http.Response, l *lease) error {
	if resp.Body == nil || resp.Body == http.NoBody {
		return nil
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		if t.firstTokenTimeout > 0 {
			return t.awaitFirstData(resp, l)
		}
		return nil
	}
	return awaitContent(resp, l)
}

// awaitContent reads until a byte that is not white space arrives; white
// space before it is dropped.
func awaitContent(resp *http.Response, l *lease) error {
	sawSpace := false
	for {
		n, err := resp.Body.Read(l.aheadBuf[:])
		chunk := l.aheadBuf[:n]
		if trimmed := bytes.TrimLeft(chunk, " \t\r\n"); len(trimmed) > 0 {
			// Hand these over; if err is set, the body repeats it on
			// the caller's next read.
			l.ahead = trimmed
			return nil
		}
		sawSpace = sawSpace || n > 0
		switch {
		case err == io.EOF && sawSpace:
			return ErrEmptyAnswer
		case err == io.EOF:
			return nil // an empty body, as sent
		case err != nil:
			return err // broken before any content reached the caller
		}
	}
}

// firstDataMax bounds what is read while waiting for a stream's first
// data line; keep-alive comments beyond it are dropped as they come.
const firstDataMax = 8 << 10

// awaitFirstData reads a stream until its first data line, giving up
// after the first-token timeout.
func (t *Transport) awaitFirstData(resp *http.Response, l *lease) error {
	var timedOut atomic.Bool
	stop := t.pool.clock.AfterFunc(t.firstTokenTimeout, func() {
		timedOut.Store(true)
		resp.Body.Close() // unblocks the read below
	})
	buf := make([]byte, 0, 1024)
	for {
		if len(buf) == cap(buf) {
			buf = dropCompleteComments(buf)
			if len(buf) == cap(buf) {
				if cap(buf) >= firstDataMax {
					buf = buf[:0] // one endless line: nothing to keep
				} else {
					buf = append(make([]byte, 0, 2*cap(buf)), buf...)
				}
			}
		}
		n, err := resp.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if hasDataLine(buf) && stop() {
			l.ahead = buf
			return nil
		}
		if timedOut.Load() {
			return ErrFirstTokenTimeout
		}
		if err != nil {
			stop()
			return err
		}
	}
}

// hasDataLine reports whether an SSE buffer holds the start of a data line.
func hasDataLine(buf []byte) bool {
	return bytes.HasPrefix(buf, []byte("data:")) || bytes.Contains(buf, []byte("\ndata:"))
}

// dropCompleteComments removes the complete comment and blank lines at
// the start of an SSE buffer.
func dropCompleteComments(buf []byte) []byte {
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			return buf
		}
		line := bytes.TrimRight(buf[:i], "\r")
		if len(line) > 0 && line[0] != ':' {
			return buf
		}
		buf = append(buf[:0], buf[i+1:]...)
	}
}

// resyncFromHeaders lowers the account's RPM and TPM buckets to what the
// provider says remains, so that its limits are kept before a 429 rather
// than learnt from one.
func (t *Transport) resyncFromHeaders(resp *http.Response, k *keyState) {
	if !k.account.hasRates() {
		return
	}
	requests := headerInt(resp.Header, "X-Ratelimit-Remaining-Requests")
	tokens := headerInt(resp.Header, "X-Ratelimit-Remaining-Tokens")
	if requests >= 0 || tokens >= 0 {
		k.account.resync(t.pool.clock.Now(), requests, tokens)
	}
}

// headerInt reads a non-negative integer header, or -1.
func headerInt(h http.Header, name string) int {
	v := h.Get(name)
	if v == "" {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return -1
	}
	return n
}
