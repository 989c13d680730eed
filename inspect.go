package keypool

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
)

// aheadMax bounds what is read ahead of the caller to inspect the start
// of a body. Past it the body is handed over as it is: the look-ahead
// never drops a byte, it stops looking.
const aheadMax = 64 << 10

// inspect looks at the start of a 2xx body before it goes to the caller,
// which is the last moment a retry is still safe. A JSON answer is read
// up to its first byte that is not white space, so that an empty answer
// can be retried; a stream, when a first-token timeout is set, is read up
// to its first data line. Other bodies, and encoded ones, are not looked
// at. What is read is kept in the lease, byte for byte, and served to the
// caller first. It returns nil when the response can be handed over, or
// why it must not be.
func (t *Transport) inspect(resp *http.Response, l *lease) error {
	if resp.Body == nil || resp.Body == http.NoBody {
		return nil
	}
	if encoded(resp.Header) {
		return nil // what it holds can't be read without decoding it
	}
	switch ct := header(resp.Header, "Content-Type"); {
	case isMediaType(ct, "text/event-stream"):
		if t.firstTokenTimeout > 0 {
			return t.awaitFirstData(resp, l)
		}
	case isJSON(ct):
		return awaitContent(resp, l)
	}
	return nil
}

// isStreaming reports whether the provider goes on writing resp after
// its headers: a stream, or an upgraded connection.
func isStreaming(resp *http.Response) bool {
	return resp.StatusCode == http.StatusSwitchingProtocols ||
		isMediaType(header(resp.Header, "Content-Type"), "text/event-stream")
}

// isMediaType reports whether the Content-Type value ct is of the media
// type want (lower case), whatever its case and parameters.
func isMediaType(ct, want string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(strings.TrimSpace(ct), want)
}

// isJSON reports whether ct is application/json or a +json type.
func isJSON(ct string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	const suffix = "+json"
	return strings.EqualFold(ct, "application/json") ||
		(len(ct) > len(suffix) && strings.EqualFold(ct[len(ct)-len(suffix):], suffix))
}

// readAhead reads the next bytes of body into l's look-ahead buffer,
// growing it up to aheadMax, and returns the bytes it read. full is set
// when the buffer cannot grow any more.
func readAhead(body io.Reader, l *lease) (chunk []byte, full bool, err error) {
	buf := l.ahead
	if buf == nil {
		buf = l.aheadBuf[:0]
	}
	if len(buf) == cap(buf) {
		if cap(buf) >= aheadMax {
			return nil, true, nil
		}
		buf = append(make([]byte, 0, min(2*cap(buf), aheadMax)), buf...)
	}
	n, err := body.Read(buf[len(buf):cap(buf)])
	l.ahead = buf[:len(buf)+n]
	return l.ahead[len(buf):], false, err
}

// awaitContent reads until a byte that is not white space arrives.
func awaitContent(resp *http.Response, l *lease) error {
	for {
		chunk, full, err := readAhead(resp.Body, l)
		switch {
		case full, len(bytes.TrimLeft(chunk, " \t\r\n")) > 0:
			// Content, or too much white space to hold: hand it over.
			// If err is set, the body repeats it on the caller's next read.
			return nil
		case err == io.EOF && len(l.ahead) > 0:
			return ErrEmptyAnswer
		case err == io.EOF:
			return nil // an empty body, as sent
		case err != nil:
			return err // broken before any content reached the caller
		}
	}
}

// awaitFirstData reads a stream until its first data line, giving up
// after the first-token timeout.
func (t *Transport) awaitFirstData(resp *http.Response, l *lease) error {
	var timedOut atomic.Bool
	stop := t.pool.clock.AfterFunc(t.firstTokenTimeout, func() {
		timedOut.Store(true)
		resp.Body.Close() // unblocks the read below
	})
	from := 0 // where the search for a data line resumes
	for {
		_, full, err := readAhead(resp.Body, l)
		var found bool
		found, from = findDataLine(l.ahead, from)
		if found || full {
			if stop() {
				return nil
			}
			return ErrFirstTokenTimeout
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

// utf8BOM may precede a stream's first line.
const utf8BOM = "\ufeff"

// findDataLine reports whether the SSE text in buf holds the start of a
// data line, looking from from on. Lines may end in LF, CR or CRLF. When
// it finds none it returns where to look again once more bytes arrive.
func findDataLine(buf []byte, from int) (found bool, next int) {
	for i := from; ; {
		j := bytes.Index(buf[i:], []byte("data"))
		if j < 0 {
			return false, max(from, len(buf)-len("data")+1)
		}
		i += j
		atLineStart := i == 0 || buf[i-1] == '\n' || buf[i-1] == '\r' ||
			(i == len(utf8BOM) && bytes.HasPrefix(buf, []byte(utf8BOM)))
		if atLineStart {
			if i+len("data") == len(buf) {
				return false, i // its end has not arrived yet
			}
			if c := buf[i+len("data")]; c == ':' || c == '\n' || c == '\r' {
				return true, i
			}
		}
		i++
	}
}
