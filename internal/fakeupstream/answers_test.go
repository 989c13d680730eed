package fakeupstream_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// chatAnswer is a chat completion.
type chatAnswer struct {
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Message      struct{ Role, Content string } `json:"message"`
		FinishReason string                         `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		Prompt     int `json:"prompt_tokens"`
		Completion int `json:"completion_tokens"`
		Total      int `json:"total_tokens"`
	} `json:"usage"`
}

// checkChatAnswer checks a chat completion's shape and usage.
func checkChatAnswer(t *testing.T, body, model string, prompt, completion int) {
	t.Helper()
	var got chatAnswer
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if got.Object != "chat.completion" || got.Model != model || len(got.Choices) != 1 {
		t.Fatalf("answer %s", body)
	}
	if c := got.Choices[0]; c.Message.Role != "assistant" || c.Message.Content != "Hello from the simulator." || c.FinishReason != "stop" {
		t.Errorf("choice %+v", c)
	}
	if u := got.Usage; u.Prompt != prompt || u.Completion != completion || u.Total != prompt+completion {
		t.Errorf("usage %+v, want prompt %d, completion %d", u, prompt, completion)
	}
}

func TestChatCompletion(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-a")})
	body := `{"model":"deepseek-chat","max_tokens":5,"messages":[{"role":"user","content":"hello there"}]}`
	a := chat(t, s, "sk-a", body)
	if a.status != 200 || a.header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, headers %v", a.status, a.header)
	}
	prompt := len(body) / 4
	checkChatAnswer(t, a.body, "deepseek-chat", prompt, 5)
	c := s.Counters("sk-a")
	if c.Requests != 1 || c.OK != 1 || c.PromptTokens != prompt || c.CompletionTokens != 5 {
		t.Errorf("counters %+v", c)
	}
	if total := s.Total(); total.OK != 1 || total.PromptTokens != prompt {
		t.Errorf("total %+v", total)
	}
}

func TestCompletionTokens(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-a")})
	for body, want := range map[string]int{
		`{"model":"m"}`:                  16,
		`{"model":"m","max_tokens":100}`: 16,
		`{"model":"m","max_completion_tokens":3,"max_tokens":9}`: 3,
	} {
		checkChatAnswer(t, chat(t, s, "sk-a", body).body, "m", len(body)/4, want)
	}
}

func TestAnyPathEndingInChatCompletions(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-a")})
	a := send(t, s, http.MethodPost, "/api/v3/chat/completions", map[string]string{"Authorization": "Bearer sk-a"}, chatBody)
	if a.status != 200 {
		t.Errorf("status %d", a.status)
	}
}

func TestBadRequestBody(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-a")})
	for _, body := range []string{`{"messages":[]}`, `not json`} {
		if a := chat(t, s, "sk-a", body); a.status != 400 {
			t.Errorf("%q: status %d", body, a.status)
		}
	}
}

func TestUnknownPathIsNotFound(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-a")})
	auth := map[string]string{"Authorization": "Bearer sk-a"}
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/v1/chat/completions"},
		{http.MethodPost, "/v1/embeddings"},
		{http.MethodPost, "/"},
		{http.MethodDelete, "/v1/messages"},
	} {
		a := send(t, s, tc.method, tc.path, auth, chatBody)
		if a.status != 404 {
			t.Errorf("%s %s: status %d", tc.method, tc.path, a.status)
			continue
		}
		decodeOpenAIError(t, a.body)
	}
	if c := s.Total(); c.Requests != 0 {
		t.Errorf("unknown paths counted: %+v", c)
	}
}

func TestEmptyAnswers(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: map[string]fakeupstream.Key{"sk-a": {EmptyAnswers: true}}})
	a := chat(t, s, "sk-a", chatBody)
	if a.status != 200 || strings.TrimSpace(a.body) != "" || a.body == "" {
		t.Errorf("status %d, body %q", a.status, a.body)
	}
	if c := s.Counters("sk-a"); c.OK != 0 || c.Requests != 1 {
		t.Errorf("counters %+v", c)
	}
}

func TestBodyMismatches(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-a")})
	sum := sha256.Sum256([]byte(chatBody))
	good := hex.EncodeToString(sum[:])
	for _, want := range []string{good, strings.Repeat("0", 64)} {
		send(t, s, http.MethodPost, "/v1/chat/completions", map[string]string{"Authorization": "Bearer sk-a", "X-Body-Sha256": want}, chatBody)
	}
	if c := s.Counters("sk-a"); c.BodyMismatches != 1 || c.OK != 2 {
		t.Errorf("counters %+v", c)
	}
}
