package keypool

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// requestMeta is what the pool may need from a request body: the model
// for keys that serve only some, and the tokens to reserve against TPM.
type requestMeta struct {
	Model string
	// Tokens estimates the request's use: its prompt (a token is about
	// four bytes of JSON) plus the completion it allows. It is 0 for a
	// body that names no model: not a model request.
	Tokens int
}

// defaultCompletionTokens is reserved for a request that sets no
// max_tokens; the reservation is corrected once usage is known.
const defaultCompletionTokens = 256

// maxCompletionEstimate bounds the completion a request is taken to
// allow, so that absurd values cannot overflow an estimate.
const maxCompletionEstimate = 1 << 30

// parseRequestMeta reads model, max_tokens and max_completion_tokens from
// a JSON request body. The model is found whatever the other fields
// hold: numbers written as 100.0, 1e3 or "100" are read leniently, and
// values that are not numbers are ignored.
func parseRequestMeta(body []byte) requestMeta {
	var fields struct {
		Model               json.RawMessage `json:"model"`
		MaxTokens           json.RawMessage `json:"max_tokens"`
		MaxCompletionTokens json.RawMessage `json:"max_completion_tokens"`
	}
	if json.Unmarshal(body, &fields) != nil {
		return requestMeta{}
	}
	var m requestMeta
	if json.Unmarshal(fields.Model, &m.Model) != nil || m.Model == "" {
		return requestMeta{}
	}
	completion, ok := lenientCount(fields.MaxCompletionTokens)
	if !ok {
		if completion, ok = lenientCount(fields.MaxTokens); !ok {
			completion = defaultCompletionTokens
		}
	}
	m.Tokens = len(body)/4 + completion
	return m
}

// lenientCount reads a JSON number, or a string holding one, as a count
// of at most maxCompletionEstimate. ok is false for anything else,
// negative numbers included.
func lenientCount(raw json.RawMessage) (n int, ok bool) {
	s := strings.Trim(strings.TrimSpace(string(raw)), `"`)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !isRangeError(err) || math.IsNaN(f) || f < 0 {
		return 0, false
	}
	return int(min(f, maxCompletionEstimate)), true
}

func isRangeError(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}
