package keypool

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	oai "github.com/openai/openai-go/v3"
	oaiopt "github.com/openai/openai-go/v3/option"
	openai "github.com/sashabaranov/go-openai"
)

// A protocol upgrade is handed over at once with a body the client can
// write to, and holds its key's slot until it is closed.
func TestWebSocketUpgradePassesThrough(t *testing.T) {
	var gotAuth atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth.Store(r.Header.Get("Authorization"))
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo: "), msg...)); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	tr, p, _ := newTestTransport(t, keysOf("sk-ws"), &http.Transport{}, nil, WithFirstTokenTimeout(time.Hour))
	defer tr.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/realtime", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: tr},
		HTTPHeader: http.Header{"Authorization": {"Bearer placeholder"}},
	})
	if err != nil {
		t.Fatalf("dial through keypool: %v", err)
	}
	if got := gotAuth.Load(); got != "Bearer sk-ws" {
		t.Errorf("upstream saw Authorization %q", got)
	}
	if st := p.Stats()[0]; st.InFlight != 1 {
		t.Errorf("an open WebSocket holds %d slots, want 1", st.InFlight)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	_, msg, err := c.Read(ctx)
	if err != nil || string(msg) != "echo: hello" {
		t.Fatalf("read %q, %v", msg, err)
	}
	c.Close(websocket.StatusNormalClosure, "")
	waitFor(t, func() bool { return p.Stats()[0].InFlight == 0 })
}

// Anthropic's stream puts input tokens in message_start and output tokens
// in message_delta: both count.
func TestAnthropicStreamUsageIsSummed(t *testing.T) {
	stream := strings.Join([]string{
		"event: message_start",
		`data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}`,
		"",
		"event: content_block_start",
		`data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
		"",
		"event: ping",
		`data: {"type": "ping"}`,
		"",
		"event: content_block_delta",
		`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}`,
		"",
		"event: content_block_stop",
		`data: {"type":"content_block_stop","index":0}`,
		"",
		"event: message_delta",
		`data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}`,
		"",
		"event: message_stop",
		`data: {"type":"message_stop"}`,
		"", "",
	}, "\n")
	srv, _ := fixedAnswer(t, 200, "text/event-stream", stream)
	tr, p, _ := newTestTransport(t, []Key{{Secret: "sk-ant", TPM: 100000}}, srv.Client().Transport, nil, WithAuth(AuthXAPIKey))
	resp, err := post(t, tr, srv.URL, `{"model":"claude-sonnet-4-5","max_tokens":1000,"stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if got := p.Stats()[0].Tokens; got != 40 {
		t.Errorf("Stats().Tokens = %d, want 25 input + 15 output", got)
	}
}

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
	tr, p, _ := newTestTransport(t, []Key{{Secret: "sk-a", TPM: 20000, MaxConcurrent: 50}}, srv.Client().Transport, nil)
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
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := client.CreateChatCompletion(ctx, openai.ChatCompletionRequest{
				Model: "deepseek-chat", MaxTokens: 64, Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "hi"}},
			})
			if err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of 40 chat requests after a 5 MiB upload failed", n)
	}
}

// A failed attempt gives its TPM reservation back; a success keeps what
// its usage says.
func TestFailedAttemptsGiveTheirTokensBack(t *testing.T) {
	s := &scripted{script: map[string][]func(http.ResponseWriter){
		"sk-a": {status(429, `{}`, "Retry-After", "30")},
		"sk-b": {status(503, `{}`), status(200, `{"usage":{"prompt_tokens":7,"completion_tokens":3}}`, "Content-Type", "application/json")},
	}}
	upstream := httptest.NewServer(s)
	defer upstream.Close()
	tr, p, _ := newTestTransport(t, []Key{{Secret: "sk-a", TPM: 60000, MaxConcurrent: 5, Weight: 1000}, {Secret: "sk-b", TPM: 60000, MaxConcurrent: 5}},
		upstream.Client().Transport, nil)
	proveAll(p)
	resp, err := post(t, tr, upstream.URL, `{"model":"m","max_tokens":1000}`)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if got := s.seenCopy(); strings.Join(got, " ") != "sk-a sk-b sk-b" {
		t.Fatalf("attempts went to %v", got)
	}
	for i, want := range []float64{60000, 60000 - 10} {
		if got := p.snap.Load().keys[i].account.(*localAccount).tpm.Load().tokens; got != want {
			t.Errorf("key %d: TPM bucket holds %v, want %v", i, got, want)
		}
	}
}

// A BaseURL's escaped path stays escaped on the wire.
func TestEscapedBaseURLPathIsKept(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.RequestURI)
	}))
	defer srv.Close()
	tr, _, _ := newTestTransport(t, []Key{{Secret: "sk-a", BaseURL: srv.URL + "/gw/team%2Fa/openai"}}, srv.Client().Transport, nil)
	resp, err := post(t, tr, "http://placeholder.invalid", chatBody)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if got.Load() != "/gw/team%2Fa/openai/v1/chat/completions" {
		t.Errorf("upstream saw %q", got.Load())
	}
}

// A response keypool hands back after spending its own attempts tells
// the client not to retry it: openai-go's own retries do not multiply
// keypool's.
func TestClientRetriesDoNotMultiply(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(503)
		io.WriteString(w, `{"error":{"message":"overloaded","type":"server_error"}}`)
	}))
	defer srv.Close()
	tr, _, _ := newTestTransport(t, keysOf("sk-a", "sk-b"), srv.Client().Transport, nil, WithRetryBudget(1e9, 0))
	client := oai.NewClient(oaiopt.WithBaseURL(srv.URL+"/v1/"), oaiopt.WithAPIKey("placeholder"),
		oaiopt.WithHTTPClient(&http.Client{Transport: tr})) // openai-go's default retries left on
	_, err := client.Chat.Completions.New(context.Background(), oai.ChatCompletionNewParams{
		Model: "deepseek-chat", Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("hi")},
	})
	if err == nil {
		t.Fatal("want the 503")
	}
	if n := hits.Load(); n != 5 {
		t.Errorf("one call made %d upstream requests, want keypool's 5", n)
	}
}
