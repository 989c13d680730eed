package keypool

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// An upload is not a model request: it reserves no tokens, so the chat
// requests after it are not starved.
func TestUploadsDoNotDrainTPM(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/files") {
			io.WriteString(w, `{"id":"file-1","object":"file","bytes":5242880,"created_at":1,"filename":"data.jsonl","purpose":"fine-tune"}`)
			return
		}
		io.WriteString(w, `{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}`)
	}))
	defer srv.Close()
	tr, p, _ := newFakeClockTransport(t, []Key{{Secret: "sk-a", TPM: 20000, MaxConcurrent: 50}}, srv.Client().Transport, nil)
	proveAll(p)
	cfg := openai.DefaultConfig("placeholder")
	cfg.BaseURL = srv.URL + "/v1"
	cfg.HTTPClient = &http.Client{Transport: tr}
	client := openai.NewClientWithConfig(cfg)
	if _, err := client.CreateFileBytes(context.Background(), openai.FileBytesRequest{
		Name: "data.jsonl", Bytes: []byte(strings.Repeat("x", 5<<20)), Purpose: openai.PurposeFineTune,
	}); err != nil {
		t.Fatal(err)
	}
	failed := runLoad(40, 40, func(int) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := client.CreateChatCompletion(ctx, openai.ChatCompletionRequest{
			Model: "deepseek-chat", MaxTokens: 64, Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "hi"}},
		})
		return err
	})
	if n := failed; n != 0 {
		t.Errorf("%d of 40 chat requests after a 5 MiB upload failed", n)
	}
}

func TestParseRequestMeta(t *testing.T) {
	tests := []struct {
		body  string
		model string
		extra int // tokens beyond len(body)/4
	}{
		{`{"model":"gpt-4o","max_tokens":100}`, "gpt-4o", 100},
		{`{"model":"o3","max_completion_tokens":50,"max_tokens":9}`, "o3", 50},
		{`{"model":"deepseek-chat"}`, "deepseek-chat", defaultCompletionTokens},
		{`{"model":"x","max_tokens":-4}`, "x", defaultCompletionTokens},
	}
	for _, tt := range tests {
		m := parseRequestMeta([]byte(tt.body))
		if m.Model != tt.model || m.Tokens != len(tt.body)/4+tt.extra {
			t.Errorf("parseRequestMeta(%s) = %+v, want model %q and %d tokens", tt.body, m, tt.model, len(tt.body)/4+tt.extra)
		}
	}
	// Not a model request: no model, no tokens.
	for _, body := range []string{`not json`, `{"purpose":"fine-tune"}`, `{"model":42}`, ``} {
		if m := parseRequestMeta([]byte(body)); m != (requestMeta{}) {
			t.Errorf("parseRequestMeta(%s) = %+v, want nothing", body, m)
		}
	}
}

func FuzzParseRequestMeta(f *testing.F) {
	for _, s := range []string{`{"model":"gpt-4o","max_tokens":100}`, `{"model":"o3","max_completion_tokens":99999999999}`, `{"max_tokens":-1}`, `{`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m := parseRequestMeta(body)
		if m.Tokens < 0 {
			t.Fatalf("negative estimate %d for %q", m.Tokens, body)
		}
	})
}

// The model is found whatever the numbers around it look like.
func TestModelFoundDespiteOddNumbers(t *testing.T) {
	for _, body := range []string{
		`{"model":"m1","max_tokens":100.0}`,
		`{"model":"m1","max_tokens":"100"}`,
		`{"model":"m1","max_tokens":1e3}`,
		`{"max_completion_tokens":1e400,"model":"m1"}`,
		`{"model":"m1","max_tokens":null,"temperature":"hot"}`,
	} {
		if m := parseRequestMeta([]byte(body)); m.Model != "m1" || m.Tokens <= 0 {
			t.Errorf("parseRequestMeta(%s) = %+v, want model m1 and a positive estimate", body, m)
		}
	}
}

// go-openai's CreateFile, a multipart upload read from a file, reserves
// no tokens on a TPM-limited key: the bucket is full while the upload is
// at the upstream and after its answer, which carries no usage.
func TestCreateFileReservesNoTokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data.jsonl")
	if err := os.WriteFile(path, []byte(strings.Repeat(`{"prompt":"x","completion":"y"}`+"\n", 1<<15)), 0o600); err != nil {
		t.Fatal(err)
	}
	var p *Pool
	var during float64
	var uploaded int64
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) { // on the caller's goroutine
		uploaded, _ = io.Copy(io.Discard, req.Body)
		during = tpmHeld(p)
		return jsonAnswer(200, `{"id":"file-1","object":"file","bytes":1048576,"created_at":1,"filename":"data.jsonl","purpose":"fine-tune"}`), nil
	})
	tr, p, _ := newFakeClockTransport(t, []Key{{Secret: "sk-a", TPM: 20000}}, base, nil)
	proveAll(p)
	cfg := openai.DefaultConfig("placeholder")
	cfg.BaseURL = "https://api.example.test/v1"
	cfg.HTTPClient = &http.Client{Transport: tr}
	client := openai.NewClientWithConfig(cfg)
	if _, err := client.CreateFile(context.Background(), openai.FileRequest{
		FileName: "data.jsonl", FilePath: path, Purpose: string(openai.PurposeFineTune),
	}); err != nil {
		t.Fatal(err)
	}
	if uploaded < 1<<20 {
		t.Fatalf("the upstream got %d bytes, want the whole upload", uploaded)
	}
	// The pool's clock stands still: a full bucket took nothing.
	if during != 20000 {
		t.Errorf("the TPM bucket held %v while the upload was at the upstream, want 20000 (nothing reserved)", during)
	}
	if got := tpmHeld(p); got != 20000 {
		t.Errorf("the TPM bucket holds %v after the upload, want 20000", got)
	}
}
