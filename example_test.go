package keypool_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"

	"github.com/keypool/keypool"
	openai "github.com/sashabaranov/go-openai"
)

// provider stands in for an OpenAI-compatible API: it answers every
// chat completion, streamed or not, and refuses the secret "sk-revoked-…".
func provider() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Header.Get("Authorization"), "Bearer sk-revoked") {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"message":"Incorrect API key provided","code":"invalid_api_key"}}`)
			return
		}
		var req struct{ Stream bool }
		json.NewDecoder(r.Body).Decode(&req)
		if req.Stream {
			w.Header().Set("Content-Type", "text/event-stream")
			for _, word := range []string{"Hello", " there"} {
				fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n", word)
			}
			io.WriteString(w, "data: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[{"index":0,"message":{"role":"assistant","content":"Hello"}}],`+
			`"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}`)
	}))
}

// Example wires a pool of three keys into go-openai. One key has been
// revoked: it costs one failed attempt, after which the pool disables it
// and every request goes to the other two.
func Example() {
	upstream := provider()
	defer upstream.Close()

	pool, err := keypool.New([]keypool.Key{
		{Secret: "sk-example-aaaaaaaaaaaa1111", MaxConcurrent: 10},
		{Secret: "sk-example-bbbbbbbbbbbb2222", MaxConcurrent: 10},
		{Secret: "sk-revoked-cccccccccccc3333", MaxConcurrent: 10},
	})
	if err != nil {
		log.Fatal(err)
	}
	cfg := openai.DefaultConfig("")
	cfg.BaseURL = upstream.URL + "/v1"
	cfg.HTTPClient = &http.Client{Transport: keypool.NewTransport(pool)}
	client := openai.NewClientWithConfig(cfg)

	for range 6 {
		_, err := client.CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
			Model:    "deepseek-chat",
			Messages: []openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleUser, Content: "Hello"}},
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	for _, st := range pool.Stats() {
		fmt.Printf("%s %s: %d successes, %d failures\n", st.Name, st.State, st.Successes, st.Failures)
	}
	// Output:
	// sk-…1111 ready: 3 successes, 0 failures
	// sk-…2222 ready: 3 successes, 0 failures
	// sk-…3333 disabled: 0 successes, 1 failures
}

// Example_streaming streams a chat completion. The stream holds its key's
// in-flight slot until it is read to its end or closed, so streams count
// against MaxConcurrent for as long as they run.
func Example_streaming() {
	upstream := provider()
	defer upstream.Close()
	pool, err := keypool.New([]keypool.Key{{Secret: "sk-example-aaaaaaaaaaaa1111", MaxConcurrent: 1}})
	if err != nil {
		log.Fatal(err)
	}
	cfg := openai.DefaultConfig("")
	cfg.BaseURL = upstream.URL + "/v1"
	cfg.HTTPClient = &http.Client{Transport: keypool.NewTransport(pool)}
	client := openai.NewClientWithConfig(cfg)

	stream, err := client.CreateChatCompletionStream(context.Background(), openai.ChatCompletionRequest{
		Model:    "deepseek-chat",
		Messages: []openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleUser, Content: "Hello"}},
		Stream:   true,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("in flight while streaming:", pool.Stats()[0].InFlight)
	var text strings.Builder
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		text.WriteString(chunk.Choices[0].Delta.Content)
	}
	stream.Close()
	fmt.Println(text.String())
	fmt.Println("in flight once done:", pool.Stats()[0].InFlight)
	// Output:
	// in flight while streaming: 1
	// Hello there
	// in flight once done: 0
}

// ExampleParseKeys reads a key list as kept in an environment variable
// or a file. A Key prints without its secret.
func ExampleParseKeys() {
	keys, err := keypool.ParseKeys(`
# production keys
sk-aaaa0123456789abcdef;max=50, sk-bbbb0123456789abcdef;weight=2;account=team;rpm=600
`)
	if err != nil {
		log.Fatal(err)
	}
	for _, k := range keys {
		fmt.Println(k)
	}
	_, err = keypool.ParseKeys("sk-aaaa0123456789abcdef,weight=2")
	fmt.Println(err)
	// Output:
	// keypool.Key{sk-…cdef weight=0 rpm=0 tpm=0 max=50}
	// keypool.Key{sk-…cdef weight=2 rpm=600 tpm=0 max=0}
	// keypool: invalid configuration: key list entry #2 looks like an option (weight=…); separate a key's options with ';' and keys with ',' or new lines
}

// ExamplePool_Stats reads what the pool knows of each key: its state,
// its requests in flight and the outcome of its attempts.
func ExamplePool_Stats() {
	upstream := provider()
	defer upstream.Close()
	pool, err := keypool.New([]keypool.Key{
		{Secret: "sk-example-aaaaaaaaaaaa1111", Name: "primary"},
		{Secret: "sk-revoked-cccccccccccc3333", Name: "old"},
	})
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Transport: keypool.NewTransport(pool)}
	for range 4 {
		resp, err := client.Post(upstream.URL+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"deepseek-chat","messages":[{"role":"user","content":"Hi"}]}`))
		if err != nil {
			log.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for _, st := range pool.Stats() {
		fmt.Printf("%-8s %-8s in flight %d, requests %d, successes %d, failures %d, tokens %d\n",
			st.Name, st.State, st.InFlight, st.Requests, st.Successes, st.Failures, st.Tokens)
	}
	// Output:
	// primary  ready    in flight 0, requests 4, successes 4, failures 0, tokens 40
	// old      disabled in flight 0, requests 1, successes 0, failures 1, tokens 0
}

// ExampleWithClassifier changes a verdict: this provider sometimes
// answers 200 with an error in the body, which keypool would hand over as
// a success. The classifier reads the body (keypool puts what it reads
// back for the caller) and has such answers retried on another key.
func ExampleWithClassifier() {
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer sk-flaky-aaaaaaaaaaaa1111" {
			io.WriteString(w, `{"error":{"message":"upstream model crashed"}}`)
			return
		}
		io.WriteString(w, `{"choices":[{"message":{"content":"Hello"}}]}`)
	}))
	defer flaky.Close()
	pool, err := keypool.New([]keypool.Key{
		{Secret: "sk-flaky-aaaaaaaaaaaa1111", Weight: 100}, // picked first
		{Secret: "sk-sound-bbbbbbbbbbbb2222"},
	})
	if err != nil {
		log.Fatal(err)
	}
	errorIn200 := func(resp *http.Response, err error, def keypool.Outcome) keypool.Outcome {
		if resp == nil || resp.StatusCode != http.StatusOK {
			return def
		}
		var body struct{ Error *struct{ Message string } }
		if json.NewDecoder(resp.Body).Decode(&body) == nil && body.Error != nil {
			return keypool.Outcome{Effect: keypool.EffectFailure, Retry: keypool.RetryNow}
		}
		return def
	}
	client := &http.Client{Transport: keypool.NewTransport(pool, keypool.WithClassifier(errorIn200))}
	resp, err := client.Post(flaky.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"m","messages":[]}`))
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output:
	// {"choices":[{"message":{"content":"Hello"}}]}
}

// ExampleNew shows the error for a bad key list: it names the key by its
// position and masked form, never by its secret.
func ExampleNew() {
	_, err := keypool.New([]keypool.Key{
		{Secret: "sk-proj-0123456789abcdefWXYZ"},
		{Secret: "sk-proj-9876543210fedcbaABCD", Weight: -2},
	})
	fmt.Println(err)
	// Output:
	// keypool: key #1 (sk-proj-…ABCD): Weight is -2; want 0 (meaning 1) or more
}

// ExampleWithObserver counts what each key did, from the pool's events,
// and notes why a key left the rotation.
func ExampleWithObserver() {
	upstream := provider()
	defer upstream.Close()

	var mu sync.Mutex
	attempts := map[string]int{}
	pool, err := keypool.New([]keypool.Key{
		{Secret: "sk-revoked-cccccccccccc3333", Name: "old", Weight: 100},
		{Secret: "sk-example-aaaaaaaaaaaa1111", Name: "new"},
	}, keypool.WithObserver(keypool.Observer{
		Attempt: func(e keypool.AttemptEvent) {
			mu.Lock()
			attempts[fmt.Sprintf("%s %d", e.Key, e.Status)]++
			mu.Unlock()
		},
		State: func(e keypool.StateEvent) {
			fmt.Printf("key %s is %s: %s\n", e.Key, e.State, e.Cause)
		},
	}))
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Transport: keypool.NewTransport(pool)}
	for range 3 {
		resp, err := client.Post(upstream.URL+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"deepseek-chat","messages":[]}`))
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
	}
	fmt.Println(attempts)
	// Output:
	// key old is disabled: 401 invalid_api_key
	// key new is ready: answered
	// map[new 200:3 old 401:1]
}

// ExampleWithLogger logs the pool's state changes through log/slog; a
// handler at Debug would log every attempt too.
func ExampleWithLogger() {
	upstream := provider()
	defer upstream.Close()

	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "until" {
				return slog.Attr{} // left out, for a stable example
			}
			return a
		},
	}))
	pool, err := keypool.New([]keypool.Key{
		{Secret: "sk-revoked-cccccccccccc3333", Weight: 100},
		{Secret: "sk-example-aaaaaaaaaaaa1111"},
	}, keypool.WithLogger(logger))
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Transport: keypool.NewTransport(pool)}
	resp, err := client.Post(upstream.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"deepseek-chat","messages":[]}`))
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println("served by", resp.Header.Get("Keypool-Key"), "after", resp.Header.Get("Keypool-Attempts"), "attempts")
	// Output:
	// level=WARN msg="keypool: key sk-…3333 disabled for 30m0s: 401 invalid_api_key" key=sk-…3333 state=disabled cause="401 invalid_api_key"
	// level=INFO msg="keypool: key sk-…1111 ready: answered" key=sk-…1111 state=ready cause=answered
	// served by sk-…1111 after 2 attempts
}

// ExampleKeysFromEnv reads the pool's keys from an environment variable,
// as a service deployed with its keys in its environment does.
func ExampleKeysFromEnv() {
	os.Setenv("KEYPOOL_KEYS", "sk-example-aaaaaaaaaaaa1111;priority=1, sk-or-example-bbbbbbbbbbbb2222;base=https://openrouter.ai/api;model:deepseek-chat=deepseek/deepseek-chat")
	defer os.Unsetenv("KEYPOOL_KEYS")

	keys, err := keypool.KeysFromEnv("KEYPOOL_KEYS")
	if err != nil {
		log.Fatal(err)
	}
	for _, k := range keys {
		fmt.Println(k, "priority", k.Priority, "models", k.ModelMap)
	}
	_, err = keypool.KeysFromEnv("KEYPOOL_KEYS_UNSET")
	fmt.Println(err)
	// Output:
	// keypool.Key{sk-…1111 weight=0 rpm=0 tpm=0 max=0} priority 1 models map[]
	// keypool.Key{sk-or-…2222 weight=0 rpm=0 tpm=0 max=0} priority 0 models map[deepseek-chat:deepseek/deepseek-chat]
	// keypool: no keys: the environment variable KEYPOOL_KEYS_UNSET is not set
}
