package keypool

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// decodedErrorBody returns the start of resp's error body as text: peek
// itself, or a decoded copy when the body is gzip-encoded (when the
// caller asked for gzip itself, Go's transport leaves it encoded). The
// body handed on is never changed.
func decodedErrorBody(resp *http.Response, peek []byte) []byte {
	if resp == nil || len(peek) == 0 || !strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
		return peek
	}
	zr, err := gzip.NewReader(bytes.NewReader(peek))
	if err != nil {
		return nil
	}
	text, _ := io.ReadAll(io.LimitReader(zr, errorPeekBytes))
	return text
}

// apiError is what keypool reads from an upstream error body.
type apiError struct {
	Code, Type, Message string
}

// parseErrorBody reads the error out of the body shapes providers use:
// {"error":{"code","type","message"}} (OpenAI, DeepSeek, Azure,
// OpenRouter, with a numeric or string code), {"type":"error",
// "error":{"type","message"}} (Anthropic), [{"error":{...,"status"}}]
// (Gemini), and {"error":"text"}. It returns the zero value for anything
// else, including truncated bodies.
func parseErrorBody(body []byte) apiError {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || (body[0] != '{' && body[0] != '[') {
		return apiError{}
	}
	var v any
	if json.Unmarshal(body, &v) != nil {
		return apiError{}
	}
	if list, ok := v.([]any); ok && len(list) > 0 {
		v = list[0]
	}
	top, ok := v.(map[string]any)
	if !ok {
		return apiError{}
	}
	var e apiError
	switch inner := top["error"].(type) {
	case map[string]any:
		e.Code = scalarString(inner["code"])
		if e.Code == "" {
			e.Code = scalarString(inner["status"])
		}
		e.Type = scalarString(inner["type"])
		e.Message = scalarString(inner["message"])
	case string:
		e.Message = inner
	}
	if e.Code == "" {
		e.Code = scalarString(top["code"])
	}
	if e.Message == "" {
		e.Message = scalarString(top["message"])
	}
	return e
}

func scalarString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return ""
}

// quotaCodes are the error codes and types that mean an account has no
// money or quota left, as opposed to a passing rate limit.
var quotaCodes = map[string]bool{
	"insufficient_quota":         true,
	"billing_hard_limit_reached": true,
	"billing_not_active":         true,
	"insufficient_balance":       true,
	"insufficient_funds":         true,
	"insufficient_credits":       true,
	"quota_exceeded":             true,
}

// quotaPhrases are message fragments with the same meaning, for providers
// that send no code. Gemini's rate-limit messages mention "quota" too, so
// the bare word is not one of them.
var quotaPhrases = []string{
	"exceeded your current quota",
	"insufficient balance",
	"insufficient credits",
	"insufficient_quota",
}

// quotaExhausted reports whether the error says the account's quota or
// balance is gone.
func (e apiError) quotaExhausted() bool {
	if quotaCodes[strings.ToLower(e.Code)] || quotaCodes[strings.ToLower(e.Type)] {
		return true
	}
	msg := strings.ToLower(e.Message)
	for _, p := range quotaPhrases {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}
