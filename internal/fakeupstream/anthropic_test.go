package fakeupstream_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

const messagesBody = `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hello"}]}`

// messages posts body to /v1/messages as Anthropic's SDK does.
func messages(t *testing.T, s *fakeupstream.Server, secret, body string) answer {
	t.Helper()
	return send(t, s, http.MethodPost, "/v1/messages", map[string]string{
		"x-api-key": secret, "anthropic-version": "2023-06-01", "content-type": "application/json",
	}, body)
}

// anthropicError is the body of an Anthropic error.
type anthropicError struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

func decodeAnthropicError(t *testing.T, body string) anthropicError {
	t.Helper()
	var e anthropicError
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Type != "error" || e.Error.Type == "" || e.Error.Message == "" {
		t.Fatalf("not an Anthropic error body (%v): %q", err, body)
	}
	return e
}

// anthropicMessage is a Messages answer, or the message of message_start.
type anthropicMessage struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Role    string `json:"role"`
	Model   string `json:"model"`
	Content []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
	StopReason   *string `json:"stop_reason"`
	StopSequence *string `json:"stop_sequence"`
	Usage        struct {
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
	} `json:"usage"`
}

// checkAnthropicMessage checks a Messages answer's shape and usage.
func checkAnthropicMessage(t *testing.T, body string, input, output int) {
	t.Helper()
	var m anthropicMessage
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.ID, "msg_") || m.Type != "message" || m.Role != "assistant" || m.Model != "claude-sonnet-4-5" {
		t.Errorf("message %s", body)
	}
	if len(m.Content) != 1 || m.Content[0].Type != "text" || m.Content[0].Text != "Hello from the simulator." {
		t.Errorf("content %s", body)
	}
	if m.StopReason == nil || *m.StopReason != "end_turn" || m.StopSequence != nil || !strings.Contains(body, `"stop_sequence":null`) {
		t.Errorf("stop reason and sequence in %s", body)
	}
	if m.Usage.InputTokens != input || m.Usage.OutputTokens != output {
		t.Errorf("usage %+v, want %d in, %d out", m.Usage, input, output)
	}
}

func TestAnthropicMessage(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-ant")})
	a := messages(t, s, "sk-ant", messagesBody)
	if a.status != 200 || a.header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, body %s", a.status, a.body)
	}
	checkAnthropicMessage(t, a.body, len(messagesBody)/4, 16)
	c := s.Counters("sk-ant")
	if c.OK != 1 || c.AuthHeaders["X-Api-Key"] != 1 || c.Models["claude-sonnet-4-5"] != 1 || c.CompletionTokens != 16 {
		t.Errorf("counters %+v", c)
	}
}

// sseEvent is one event of a stream.
type sseEvent struct {
	name string
	data map[string]any
}

func parseEvents(t *testing.T, body string) []sseEvent {
	t.Helper()
	var events []sseEvent
	for _, block := range strings.Split(body, "\n\n") {
		var e sseEvent
		for _, line := range strings.Split(block, "\n") {
			if name, ok := strings.CutPrefix(line, "event: "); ok {
				e.name = name
			} else if data, ok := strings.CutPrefix(line, "data: "); ok {
				if err := json.Unmarshal([]byte(data), &e.data); err != nil {
					t.Fatalf("data %q: %v", data, err)
				}
			}
		}
		if e.name != "" {
			if e.data["type"] != e.name {
				t.Errorf("event %s has type %v", e.name, e.data["type"])
			}
			events = append(events, e)
		}
	}
	return events
}

func TestAnthropicStream(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-ant"), StreamChunks: 3})
	body := strings.Replace(messagesBody, `"max_tokens":1024`, `"max_tokens":10,"stream":true`, 1)
	a := messages(t, s, "sk-ant", body)
	if a.status != 200 || a.header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, headers %v", a.status, a.header)
	}
	events := parseEvents(t, a.body)
	var names []string
	var text strings.Builder
	for _, e := range events {
		names = append(names, e.name)
		if e.name == "content_block_delta" {
			text.WriteString(e.data["delta"].(map[string]any)["text"].(string))
		}
	}
	want := []string{"message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
		"content_block_delta", "content_block_stop", "message_delta", "message_stop"}
	if !slices.Equal(names, want) || text.String() != "tok0 tok1 tok2 " {
		t.Fatalf("events %v, text %q", names, text.String())
	}
	start := events[0].data["message"].(map[string]any)
	if u := start["usage"].(map[string]any); u["input_tokens"] != float64(len(body)/4) || u["output_tokens"] != float64(1) {
		t.Errorf("message_start usage %v", u)
	}
	delta := events[7].data
	if delta["usage"].(map[string]any)["output_tokens"] != float64(10) || delta["delta"].(map[string]any)["stop_reason"] != "end_turn" {
		t.Errorf("message_delta %v", delta)
	}
	if c := s.Counters("sk-ant"); c.OK != 1 || c.CompletionTokens != 10 {
		t.Errorf("counters %+v", c)
	}
}

func TestAnthropicBadRequests(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-ant")})
	for body, want := range map[string]string{
		`{"model":"claude-sonnet-4-5","messages":[]}`: "max_tokens: Field required",
		`{"max_tokens":10,"messages":[]}`:             "model: Field required",
	} {
		a := messages(t, s, "sk-ant", body)
		if e := decodeAnthropicError(t, a.body); a.status != 400 || e.Error.Type != "invalid_request_error" || e.Error.Message != want {
			t.Errorf("%s: status %d, body %s", body, a.status, a.body)
		}
	}
}

func TestAnthropicErrors(t *testing.T) {
	cases := []struct {
		name   string
		cfg    fakeupstream.Config
		status int
		typ    string
	}{
		{"revoked", fakeupstream.Config{Keys: map[string]fakeupstream.Key{"sk-ant": {Fault: fakeupstream.FaultRevoked}}}, 401, "authentication_error"},
		{"no balance", fakeupstream.Config{Keys: map[string]fakeupstream.Key{"sk-ant": {Fault: fakeupstream.FaultNoBalance}}}, 402, "billing_error"},
		{"overloaded", fakeupstream.Config{Keys: keys("sk-ant"), OverloadedRate: 1}, 529, "overloaded_error"},
		{"random 429", fakeupstream.Config{Keys: keys("sk-ant"), RateLimitRate: 1}, 429, "rate_limit_error"},
		{"unknown model", fakeupstream.Config{Keys: keys("sk-ant"), Models: []string{"claude-opus-4-1"}}, 404, "not_found_error"},
		{"outage", fakeupstream.Config{Keys: keys("sk-ant"), Outages: []fakeupstream.Outage{{End: time.Hour, Status: 500}}}, 500, "api_error"},
	}
	for _, tc := range cases {
		s := start(t, tc.cfg)
		a := messages(t, s, "sk-ant", messagesBody)
		if e := decodeAnthropicError(t, a.body); a.status != tc.status || e.Error.Type != tc.typ {
			t.Errorf("%s: status %d, body %s", tc.name, a.status, a.body)
		}
		if a.header.Get("Retry-After") != "" {
			t.Errorf("%s: retry-after %q", tc.name, a.header.Get("Retry-After"))
		}
	}
	s := start(t, fakeupstream.Config{Keys: keys("sk-ant"), OverloadedRate: 1})
	messages(t, s, "sk-ant", messagesBody)
	if c := s.Counters("sk-ant"); c.Overloaded != 1 || c.ServerErrors != 1 {
		t.Errorf("overloaded counters %+v", c)
	}
}

func TestAnthropicRateLimits(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		s := fakeupstream.NewInMemory(fakeupstream.Config{
			Mode:     fakeupstream.OpenAI,
			Accounts: map[string]fakeupstream.Account{"sk-ant": {RPM: 1, TPM: 100000}},
			Keys:     keys("sk-ant"),
		})
		defer s.Close()
		resetAt := time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
		a := messages(t, s, "sk-ant", messagesBody)
		if a.status != 200 || a.header.Get("Anthropic-Ratelimit-Requests-Limit") != "1" ||
			a.header.Get("Anthropic-Ratelimit-Requests-Remaining") != "0" || a.header.Get("Anthropic-Ratelimit-Requests-Reset") != resetAt ||
			a.header.Get("Anthropic-Ratelimit-Tokens-Limit") != "100000" || a.header.Get("X-Ratelimit-Limit-Requests") != "" {
			t.Fatalf("first: status %d, headers %v", a.status, a.header)
		}
		a = messages(t, s, "sk-ant", messagesBody)
		if e := decodeAnthropicError(t, a.body); a.status != 429 || e.Error.Type != "rate_limit_error" {
			t.Fatalf("second: status %d, body %s", a.status, a.body)
		}
		if a.header.Get("Retry-After") != "60" || a.header.Get("Retry-After-Ms") != "" || a.header.Get("Anthropic-Ratelimit-Requests-Reset") != resetAt {
			t.Errorf("second: headers %v", a.header)
		}
	})
}

func TestAnthropicModelList(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-ant"), Models: []string{"claude-a", "claude-b"}})
	a := send(t, s, http.MethodGet, "/v1/models", map[string]string{"x-api-key": "sk-ant", "anthropic-version": "2023-06-01"}, "")
	var l struct {
		Data []struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		} `json:"data"`
		HasMore bool   `json:"has_more"`
		FirstID string `json:"first_id"`
		LastID  string `json:"last_id"`
	}
	if err := json.Unmarshal([]byte(a.body), &l); err != nil || a.status != 200 || len(l.Data) != 2 ||
		l.Data[0].Type != "model" || l.Data[1].ID != "claude-b" || l.FirstID != "claude-a" || l.LastID != "claude-b" || l.HasMore {
		t.Errorf("status %d, body %s (%v)", a.status, a.body, err)
	}
	a = send(t, s, http.MethodGet, "/v1/models", map[string]string{"x-api-key": "sk-wrong", "anthropic-version": "2023-06-01"}, "")
	if e := decodeAnthropicError(t, a.body); a.status != 401 || e.Error.Type != "authentication_error" {
		t.Errorf("wrong key: status %d, body %s", a.status, a.body)
	}
}
