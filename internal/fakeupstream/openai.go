package fakeupstream

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// openAIChat is OpenAI's chat completions protocol, which DeepSeek and
// Azure OpenAI speak too.
type openAIChat struct{}

// chatRequest is the part of a chat completion request the server reads.
type chatRequest struct {
	Model     string `json:"model"`
	Stream    bool   `json:"stream"`
	MaxTokens *int   `json:"max_tokens"`
	MaxCompl  *int   `json:"max_completion_tokens"`
}

func (openAIChat) read(r *http.Request, body []byte) (request, string) {
	var q chatRequest
	err := json.Unmarshal(body, &q)
	if q.Model == "" {
		q.Model = azureDeployment(r.URL.Path)
	}
	if err != nil || q.Model == "" {
		return request{}, "Invalid request body: model is required"
	}
	limit := q.MaxCompl
	if limit == nil {
		limit = q.MaxTokens
	}
	return request{model: q.Model, stream: q.Stream, completion: completionTokens(limit)}, ""
}

// writeError writes {"error":{"message","type","param","code"}}.
func (openAIChat) writeError(w http.ResponseWriter, e apiError, h http.Header) {
	copyHeader(w.Header(), h)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"message": e.message, "type": e.errType, "param": nil, "code": e.code,
	}})
}

// usage is a chat completion's usage.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func (openAIChat) writeAnswer(w http.ResponseWriter, c *call) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"id":      "chatcmpl-sim",
		"object":  "chat.completion",
		"created": 1700000000,
		"model":   c.model,
		"choices": []map[string]any{{
			"index":         0,
			"message":       map[string]string{"role": "assistant", "content": answerText},
			"finish_reason": "stop",
		}},
		"usage": usage{c.prompt, c.completion, c.prompt + c.completion},
	})
}

// streamHead writes nothing: a chat stream starts with its content.
func (openAIChat) streamHead(*sse, *call) {}

func (openAIChat) streamChunk(e *sse, c *call, i int) {
	e.data(chatChunk(c.model, map[string]string{"content": fmt.Sprintf("tok%d ", i)}, nil))
}

// streamTail writes a last chunk with the finish reason and usage, and
// [DONE].
func (openAIChat) streamTail(e *sse, c *call) {
	last := chatChunk(c.model, map[string]string{}, "stop")
	last["usage"] = usage{c.prompt, c.completion, c.prompt + c.completion}
	e.data(last)
	io.WriteString(e.w, "data: [DONE]\n\n")
}

// chatChunk is one chunk of a chat completion stream.
func chatChunk(model string, delta map[string]string, finish any) map[string]any {
	choice := map[string]any{"index": 0, "delta": delta}
	if finish != nil {
		choice["finish_reason"] = finish
	}
	return map[string]any{
		"id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
		"choices": []map[string]any{choice},
	}
}

// limitHeaders writes x-ratelimit-{limit,remaining,reset}-{requests,tokens}.
func (openAIChat) limitHeaders(h http.Header, a *accountState, now time.Time) {
	for _, b := range []struct {
		what string
		b    *bucket
	}{{"requests", &a.rpm}, {"tokens", &a.tpm}} {
		if remaining, untilFull, ok := b.b.state(now); ok {
			h.Set("X-Ratelimit-Limit-"+b.what, strconv.Itoa(b.b.limit))
			h.Set("X-Ratelimit-Remaining-"+b.what, strconv.Itoa(remaining))
			h.Set("X-Ratelimit-Reset-"+b.what, untilFull.Round(time.Millisecond).String())
		}
	}
}

// retryHeaders writes Retry-After in whole seconds and Retry-After-Ms, as
// OpenAI and Azure OpenAI do.
func (openAIChat) retryHeaders(h http.Header, wait time.Duration) {
	h.Set("Retry-After", ceilSeconds(wait))
	h.Set("Retry-After-Ms", strconv.FormatInt(wait.Milliseconds()+1, 10))
}

// modelList is {"object":"list","data":[{"id","object":"model",...}]}.
func (openAIChat) modelList(models []string) any {
	data := make([]map[string]any, len(models))
	for i, m := range models {
		data[i] = map[string]any{"id": m, "object": "model", "created": 1700000000, "owned_by": "fakeupstream"}
	}
	return map[string]any{"object": "list", "data": data}
}
