package keypool

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
)

// replayBody hands out the request body once per attempt. With GetBody
// (go-openai and openai-go set it) nothing is copied: the first attempt
// sends the caller's Body and later ones call GetBody. Without it the body
// is read once, up to a limit, and replayed from memory.
type replayBody struct {
	first   io.ReadCloser // the caller's Body, until handed out
	getBody func() (io.ReadCloser, error)
	buf     []byte // the whole body, when it had to be read or was read for its model
}

// init prepares b for req's body. On error the caller's body is closed.
func (b *replayBody) init(req *http.Request, limit int64) error {
	if req.Body == nil || req.Body == http.NoBody {
		if req.ContentLength > 0 {
			return fmt.Errorf("%w: ContentLength is %d but there is no body", ErrRequestBody, req.ContentLength)
		}
		return nil
	}
	if req.GetBody != nil {
		b.first, b.getBody = req.Body, req.GetBody
		return nil
	}
	defer req.Body.Close()
	// Closing the body is the only way to stop a read that waits on the
	// caller (an upload still arriving) when its context ends.
	stop := context.AfterFunc(req.Context(), func() { req.Body.Close() })
	buf, err := io.ReadAll(io.LimitReader(req.Body, limit+1))
	stop()
	switch ctxErr := req.Context().Err(); {
	case err != nil && ctxErr != nil:
		// Either may have caused the other: keep both.
		return fmt.Errorf("%w: reading it failed: %w (the request's context ended: %w)", ErrRequestBody, err, ctxErr)
	case err != nil:
		return fmt.Errorf("%w: reading it failed: %w", ErrRequestBody, err)
	case int64(len(buf)) > limit:
		return fmt.Errorf("%w: more than %d bytes and no GetBody to re-read it; set Request.GetBody or raise WithMaxBodyBytes", ErrBodyTooLarge, limit)
	case req.ContentLength > 0 && int64(len(buf)) != req.ContentLength:
		return fmt.Errorf("%w: it holds %d bytes but ContentLength is %d", ErrRequestBody, len(buf), req.ContentLength)
	}
	b.buf = buf
	b.getBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	return nil
}

// next returns the body for one attempt, nil for a request without one.
func (b *replayBody) next() (io.ReadCloser, error) {
	if b.first != nil {
		rc := b.first
		b.first = nil
		return rc, nil
	}
	if b.getBody == nil {
		return nil, nil
	}
	rc, err := b.getBody()
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: Request.GetBody failed: %w", ErrRequestBody, err)
	case rc == nil:
		return nil, fmt.Errorf("%w: Request.GetBody returned no body", ErrRequestBody)
	}
	return rc, nil
}

// close closes the caller's body if no attempt took it, as a RoundTripper
// must.
func (b *replayBody) close() {
	if b.first != nil {
		b.first.Close()
		b.first = nil
	}
}

// meta returns the model the request asks for and the tokens to reserve
// for it against TPM. Only a JSON body naming a model is a model request:
// anything else (no body, a file upload) names no model and reserves no
// tokens. A JSON object sent under another Content-Type (curl -d sends
// application/x-www-form-urlencoded) is read as JSON, as providers read
// it. unknown is set for a JSON body too large to read for its model.
// A body read here is kept, for keys that rename its model.
func (b *replayBody) meta(req *http.Request, limit int64) (model string, tokens int, unknown bool) {
	if b.getBody == nil {
		return "", 0, false
	}
	if ct := req.Header.Get("Content-Type"); ct != "" && !isJSON(ct) && !b.startsAnObject() {
		return "", 0, false // a form or an upload: not worth reading
	}
	if b.buf == nil {
		rc, err := b.getBody()
		if err != nil {
			return "", 0, false // the attempt will meet the error and say so
		}
		buf, _ := io.ReadAll(io.LimitReader(rc, limit+1))
		rc.Close()
		if int64(len(buf)) > limit {
			return "", 0, bytes.HasPrefix(bytes.TrimSpace(buf[:min(len(buf), 512)]), []byte("{"))
		}
		b.buf = buf
	}
	m := parseRequestMeta(b.buf)
	return m.Model, m.Tokens, false
}

// sniffBytes is how much of a body startsAnObject looks at.
const sniffBytes = 64

// startsAnObject reports whether the body starts with a JSON object's
// brace, after white space. It reads no more than sniffBytes of a body
// that is not in memory.
func (b *replayBody) startsAnObject() bool {
	head := b.buf
	if head == nil {
		rc, err := b.getBody()
		if err != nil || rc == nil {
			return false
		}
		var buf [sniffBytes]byte
		n, _ := io.ReadFull(rc, buf[:])
		rc.Close()
		head = buf[:n]
	}
	head = bytes.TrimLeft(head[:min(len(head), sniffBytes)], " \t\r\n")
	return len(head) > 0 && head[0] == '{'
}
