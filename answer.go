package keypool

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
)

// errorPeekBytes is how much of an error body is read to classify it,
// and how much of any answer is kept to hand back should every attempt
// fail.
const errorPeekBytes = 16 << 10

// drainBytes bounds how much of a discarded body is read so that its
// connection can be reused; past it the connection is closed instead.
const drainBytes = 64 << 10

// handOver gives a's answer to the caller, with its body tied to the
// attempt's lease and its Request set to the caller's own, which holds
// no secret.
func (c *call) handOver(a *attempt) *http.Response {
	resp, l := a.resp, a.lease
	resp.Request = c.req
	c.servedBy, c.handedOver = l.key, a.asRecorded()
	if a.sentTo != c.req.URL && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		resolveLocation(resp.Header, a.sentTo)
	}
	if resp.Body == nil || resp.Body == http.NoBody {
		l.release()
		return resp
	}
	l.attach(resp)
	if rw, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		// An upgraded connection: net/http promises a body the client
		// can write to. It keeps its slot until closed, like a stream.
		resp.Body = &upgradedBody{lease: l, rw: rw}
		return resp
	}
	resp.Body = l
	return resp
}

// upgradedBody is the body of a 101 Switching Protocols answer: the
// connection itself, read and written by the client, holding its lease.
type upgradedBody struct {
	*lease
	rw io.ReadWriteCloser
}

func (b *upgradedBody) Write(p []byte) (int, error) { return b.rw.Write(p) }

// resolveLocation makes a relative Location absolute against the URL
// that was requested, which is not the caller's when a key's BaseURL
// sent the request elsewhere: the client would resolve it against its
// own.
func resolveLocation(h http.Header, requested *url.URL) {
	loc := h.Get("Location")
	if loc == "" {
		return
	}
	u, err := url.Parse(loc)
	if err != nil || u.IsAbs() {
		return
	}
	h.Set("Location", requested.ResolveReference(u).String())
}

// peekBody reads up to limit bytes of resp's body and puts them back in
// front of the rest, so that the body still reads whole.
func peekBody(resp *http.Response, limit int) []byte {
	if resp.Body == nil || resp.Body == http.NoBody {
		return nil
	}
	buf, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)))
	rest := resp.Body
	if err != nil {
		rest = &failedBody{err: err, rc: resp.Body} // the caller meets the error where the peek did
	}
	resp.Body = &prefixedBody{prefix: buf, rc: rest}
	return buf
}

// keepForLater keeps an answer to hand back should every attempt fail:
// its status, its headers, and the start of its body as sent (bytes
// read ahead included, encoding untouched), up to errorPeekBytes. The
// rest is drained (bounded) and the body closed so the connection is
// reused.
func keepForLater(resp *http.Response, l *lease, req *http.Request) *http.Response {
	body := l.takeAhead(resp.Body)
	var kept []byte
	if body != nil {
		kept, _ = io.ReadAll(io.LimitReader(body, errorPeekBytes))
	}
	discard(body)
	out := new(http.Response)
	*out = *resp
	out.Body = &keptBody{r: bytes.NewReader(kept)}
	out.ContentLength = int64(len(kept))
	out.TransferEncoding = nil
	out.Header = resp.Header.Clone()
	out.Header.Set("Content-Length", strconv.Itoa(len(kept)))
	out.Request = req
	out.TLS = nil
	return out
}

// discard drains up to drainBytes of a body and closes it.
func discard(rc io.ReadCloser) {
	if rc == nil {
		return
	}
	_, _ = io.CopyN(io.Discard, rc, drainBytes)
	rc.Close()
}

// prefixedBody reads prefix, then rc.
type prefixedBody struct {
	prefix []byte
	rc     io.ReadCloser
}

func (b *prefixedBody) Read(p []byte) (int, error) {
	if len(b.prefix) > 0 {
		n := copy(p, b.prefix)
		b.prefix = b.prefix[n:]
		return n, nil
	}
	return b.rc.Read(p)
}

func (b *prefixedBody) Close() error { return b.rc.Close() }

// failedBody fails every read with err.
type failedBody struct {
	err error
	rc  io.ReadCloser
}

func (b *failedBody) Read([]byte) (int, error) { return 0, b.err }
func (b *failedBody) Close() error             { return b.rc.Close() }

// recordingBody keeps what a classifier reads of a body, up to limit,
// so that it can be put back for the caller.
type recordingBody struct {
	rc    io.ReadCloser
	limit int
	read  []byte
	over  bool // more than limit was read: it cannot be put back
}

// errClassifierReadTooMuch is what the caller reads of a body the
// classifier read too much of to put back: an error, never a silently
// shortened body.
var errClassifierReadTooMuch = errors.New("keypool: the classifier read more of this body than can be kept for the caller")

func (r *recordingBody) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if !r.over {
		if len(r.read)+n > r.limit {
			r.over, r.read = true, nil
		} else {
			r.read = append(r.read, p[:n]...)
		}
	}
	return n, err
}

// Close does not close the body: the caller still reads it, and closes it.
func (r *recordingBody) Close() error { return nil }

// rewound returns the body as it was before the classifier read it, if
// it read no more than the limit.
func (r *recordingBody) rewound() io.ReadCloser {
	switch {
	case r.over:
		return &failedBody{err: errClassifierReadTooMuch, rc: r.rc}
	case len(r.read) == 0:
		return r.rc
	}
	return &prefixedBody{prefix: r.read, rc: r.rc}
}

// keptBody is the body of an answer kept for later: bytes in memory that,
// like any response body, cannot be read once closed.
type keptBody struct {
	r      *bytes.Reader
	closed atomic.Bool
}

func (b *keptBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errBodyClosed
	}
	return b.r.Read(p)
}

func (b *keptBody) Close() error {
	b.closed.Store(true)
	return nil
}
