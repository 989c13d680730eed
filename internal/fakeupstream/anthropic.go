package fakeupstream

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// StatusOverloaded is the status of Anthropic's overloaded_error, which
// Config.OverloadedRate draws.
const StatusOverloaded = 529

// anthropicMessages is Anthropic's Messages protocol: POST /v1/messages
// with the secret in x-api-key. The anthropic-version header is
// tolerated, not checked.
type anthropicMessages struct{}

// messagesRequest is the part of a Messages request the server reads.
type messagesRequest struct {
	Model     string `json:"model"`
	Stream    bool   `json:"stream"`
	MaxTokens *int   `json:"max_tokens"`
}

// read requires a model and max_tokens, as Anthropic does.
func (anthropicMessages) read(_ *http.Request, body []byte) (request, string) {
	var q messagesRequest
	switch err := json.Unmarshal(body, &q); {
	case err != nil:
		return request{}, "Invalid request body: " + err.Error()
	case q.Model == "":
		return request{}, "model: Field required"
	case q.MaxTokens == nil:
		return request{}, "max_tokens: Field required"
	}
	return request{model: q.Model, stream: q.Stream, completion: completionTokens(q.MaxTokens)}, ""
}

// anthropicErrorTypes are Anthropic's error types by status.
var anthropicErrorTypes = map[int]string{
	http.StatusBadRequest:            "invalid_request_error",
	http.StatusUnauthorized:          "authentication_error",
	http.StatusPaymentRequired:       "billing_error",
	http.StatusForbidden:             "permission_error",
	http.StatusNotFound:              "not_found_error",
	http.StatusRequestEntityTooLarge: "request_too_large",
	http.StatusTooManyRequests:       "rate_limit_error",
	http.StatusGatewayTimeout:        "timeout_error",
	StatusOverloaded:                 "overloaded_error",
}

// anthropicErrorType returns the type of an Anthropic error with that
// status: api_error for an unlisted 5xx, invalid_request_error for an
// unlisted 4xx.
func anthropicErrorType(status int) string {
	if t, ok := anthropicErrorTypes[status]; ok {
		return t
	}
	if status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}

// writeError writes {"type":"error","error":{"type","message"}}.
func (anthropicMessages) writeError(w http.ResponseWriter, e apiError, h http.Header) {
	copyHeader(w.Header(), h)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	json.NewEncoder(w).Encode(map[string]any{
		"type":  "error",
		"error": map[string]string{"type": anthropicErrorType(e.status), "message": e.message},
	})
}

// anthropicUsage is a message's usage.
type anthropicUsage struct {
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
}

// message is a Messages answer with that content, stop reason and usage.
func message(c *call, content []map[string]string, stopReason any, u anthropicUsage) map[string]any {
	return map[string]any{
		"id": "msg_sim", "type": "message", "role": "assistant", "model": c.model,
		"content": content, "stop_reason": stopReason, "stop_sequence": nil, "usage": u,
	}
}

func (anthropicMessages) writeAnswer(w http.ResponseWriter, c *call) {
	w.Header().Set("Content-Type", "application/json")
	content := []map[string]string{{"type": "text", "text": answerText}}
	json.NewEncoder(w).Encode(message(c, content, "end_turn", anthropicUsage{c.prompt, c.completion}))
}

// streamHead writes message_start, with the input tokens and one output
// token, content_block_start and a ping.
func (anthropicMessages) streamHead(e *sse, c *call) {
	e.event("message_start", map[string]any{
		"type": "message_start", "message": message(c, []map[string]string{}, nil, anthropicUsage{c.prompt, 1}),
	})
	e.event("content_block_start", map[string]any{
		"type": "content_block_start", "index": 0, "content_block": map[string]string{"type": "text", "text": ""},
	})
	e.event("ping", map[string]string{"type": "ping"})
}

func (anthropicMessages) streamChunk(e *sse, _ *call, i int) {
	e.event("content_block_delta", map[string]any{
		"type": "content_block_delta", "index": 0,
		"delta": map[string]string{"type": "text_delta", "text": fmt.Sprintf("tok%d ", i)},
	})
}

// streamTail writes content_block_stop, message_delta with the stop
// reason and the output tokens, and message_stop.
func (anthropicMessages) streamTail(e *sse, c *call) {
	e.event("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
	e.event("message_delta", map[string]any{
		"type":  "message_delta",
		"delta": map[string]any{"stop_reason": "end_turn", "stop_sequence": nil},
		"usage": map[string]int{"output_tokens": c.completion},
	})
	e.event("message_stop", map[string]string{"type": "message_stop"})
}

// limitHeaders writes anthropic-ratelimit-{requests,tokens}-{limit,
// remaining,reset}, the reset an RFC 3339 time, rounded up to the second,
// when the bucket will be full.
func (anthropicMessages) limitHeaders(h http.Header, a *accountState, now time.Time) {
	for _, b := range []struct {
		what string
		b    *bucket
	}{{"Requests", &a.rpm}, {"Tokens", &a.tpm}} {
		if remaining, untilFull, ok := b.b.state(now); ok {
			full := now.Add(untilFull)
			if t := full.Truncate(time.Second); t.Before(full) {
				full = t.Add(time.Second)
			}
			h.Set("Anthropic-Ratelimit-"+b.what+"-Limit", strconv.Itoa(b.b.limit))
			h.Set("Anthropic-Ratelimit-"+b.what+"-Remaining", strconv.Itoa(remaining))
			h.Set("Anthropic-Ratelimit-"+b.what+"-Reset", full.UTC().Format(time.RFC3339))
		}
	}
}

// retryHeaders writes retry-after in whole seconds; Anthropic sends no
// retry-after-ms.
func (anthropicMessages) retryHeaders(h http.Header, wait time.Duration) {
	h.Set("Retry-After", ceilSeconds(wait))
}

// modelList is {"data":[{"type":"model","id",...}],"has_more":false,...}.
func (anthropicMessages) modelList(models []string) any {
	data := make([]map[string]string, len(models))
	for i, m := range models {
		data[i] = map[string]string{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
	}
	return map[string]any{"data": data, "has_more": false, "first_id": models[0], "last_id": models[len(models)-1]}
}
