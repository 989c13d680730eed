package keypool

import (
	"bytes"
	"encoding/json"
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
	buf     []byte // the whole body, when it had to be read
}

// init prepares b for req's body. On error the caller's body is closed.
func (b *replayBody) init(req *http.Request, limit int64) error {
	if req.Body == nil || req.Body == http.NoBody {
		return nil
	}
	if req.GetBody != nil {
		b.first, b.getBody = req.Body, req.GetBody
		return nil
	}
	defer req.Body.Close()
	buf, err := io.ReadAll(io.LimitReader(req.Body, limit+1))
	if err != nil {
		return fmt.Errorf("keypool: reading request body: %w", err)
	}
	if int64(len(buf)) > limit {
		return fmt.Errorf("%w: more than %d bytes and no GetBody to re-read it; set Request.GetBody or raise WithMaxBodyBytes", ErrBodyTooLarge, limit)
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
	if err != nil {
		return nil, fmt.Errorf("keypool: Request.GetBody: %w", err)
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

// bytes returns the whole body for inspection, reading a fresh copy from
// GetBody if it was not read already, up to limit bytes.
func (b *replayBody) bytes(limit int64) []byte {
	if b.buf != nil || b.getBody == nil {
		return b.buf
	}
	rc, err := b.getBody()
	if err != nil {
		return nil
	}
	defer rc.Close()
	buf, _ := io.ReadAll(io.LimitReader(rc, limit))
	return buf
}

// requestMeta is what the pool may need from a request body: the model
// for keys that serve only some, and the tokens to reserve against TPM.
type requestMeta struct {
	Model string
	// Tokens estimates the request's use: its prompt (a token is about
	// four bytes of JSON) plus the completion it allows.
	Tokens int
}

// defaultCompletionTokens is reserved for a request that sets no
// max_tokens; the reservation is corrected once usage is known.
const defaultCompletionTokens = 256

// parseRequestMeta reads model, max_tokens and max_completion_tokens from
// a JSON request body. A body it cannot parse gives no model and an
// estimate from its size alone.
func parseRequestMeta(body []byte) requestMeta {
	var fields struct {
		Model               string `json:"model"`
		MaxTokens           *int   `json:"max_tokens"`
		MaxCompletionTokens *int   `json:"max_completion_tokens"`
	}
	m := requestMeta{Tokens: len(body)/4 + defaultCompletionTokens}
	if json.Unmarshal(body, &fields) != nil {
		return m
	}
	m.Model = fields.Model
	completion := defaultCompletionTokens
	switch {
	case fields.MaxCompletionTokens != nil && *fields.MaxCompletionTokens >= 0:
		completion = *fields.MaxCompletionTokens
	case fields.MaxTokens != nil && *fields.MaxTokens >= 0:
		completion = *fields.MaxTokens
	}
	m.Tokens = len(body)/4 + min(completion, 1<<30)
	return m
}
