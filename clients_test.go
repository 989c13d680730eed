package keypool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	oai "github.com/openai/openai-go/v3"
	oaiopt "github.com/openai/openai-go/v3/option"
	goopenai "github.com/sashabaranov/go-openai"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// deepseekFixture is five accounts with a hard cap of four requests in
// flight each, known to the pool.
func deepseekFixture(t *testing.T, faults map[string]fakeupstream.Fault) (*fakeupstream.Server, *Pool, *http.Client) {
	t.Helper()
	var secrets []string
	accounts := map[string]fakeupstream.Account{}
	for i := range 5 {
		s := fmt.Sprintf("sk-account%d-0123456789abcdef", i)
		secrets = append(secrets, s)
		accounts[s] = fakeupstream.Account{MaxInFlight: 4}
	}
	sim := startInMemorySim(t, fakeupstream.Config{
		Mode: fakeupstream.DeepSeek, Accounts: accounts, Keys: simKeys(faults, secrets...),
		Latency: 3 * time.Millisecond, Jitter: 2 * time.Millisecond, StreamChunks: 3, Seed: 1,
	})
	keys := make([]Key, len(secrets))
	for i, s := range secrets {
		keys[i] = Key{Secret: s, MaxConcurrent: 4}
	}
	p, err := New(keys)
	if err != nil {
		t.Fatal(err)
	}
	return sim, p, &http.Client{Transport: NewTransport(p, WithBase(sim.Client().Transport))}
}

func TestGoOpenAIUnderLoad(t *testing.T) { inVirtualTime(t, testGoOpenAIUnderLoad) }

func testGoOpenAIUnderLoad(t *testing.T) {
	sim, p, hc := deepseekFixture(t, nil)
	cfg := goopenai.DefaultConfig("placeholder")
	cfg.BaseURL = sim.URL + "/v1"
	cfg.HTTPClient = hc
	client := goopenai.NewClientWithConfig(cfg)
	req := goopenai.ChatCompletionRequest{
		Model:    "deepseek-chat",
		Messages: []goopenai.ChatCompletionMessage{{Role: goopenai.ChatMessageRoleUser, Content: "hi"}},
	}
	runLoad(40, 200, func(int) error {
		_, err := client.CreateChatCompletion(context.Background(), req)
		if err != nil {
			t.Error(err)
		}
		return err
	})
	total := sim.Total()
	if total.OK != 200 || total.RateLimited != 0 {
		t.Errorf("upstream: %d OK, %d 429s; want 200 and 0", total.OK, total.RateLimited)
	}
	for _, st := range p.Stats() {
		if st.InFlight != 0 || st.Requests < 20 {
			t.Errorf("%s: %d in flight, %d requests", st.Name, st.InFlight, st.Requests)
		}
	}

	// A stream through go-openai.
	stream, err := client.CreateChatCompletionStream(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	frames := 0
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		frames++
	}
	stream.Close()
	if frames != 4 {
		t.Errorf("stream gave %d frames, want 4", frames)
	}
}

func TestGoOpenAISeesTheUpstreamError(t *testing.T) {
	inVirtualTime(t, testGoOpenAISeesTheUpstreamError)
}

func testGoOpenAISeesTheUpstreamError(t *testing.T) {
	faults := map[string]fakeupstream.Fault{}
	for i := range 5 {
		faults[fmt.Sprintf("sk-account%d-0123456789abcdef", i)] = fakeupstream.FaultRevoked
	}
	sim, _, hc := deepseekFixture(t, faults)
	cfg := goopenai.DefaultConfig("placeholder")
	cfg.BaseURL = sim.URL + "/v1"
	cfg.HTTPClient = hc
	_, err := goopenai.NewClientWithConfig(cfg).CreateChatCompletion(context.Background(), goopenai.ChatCompletionRequest{
		Model: "deepseek-chat", Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "hi"}},
	})
	var apiErr *goopenai.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 401 {
		t.Fatalf("err = %v, want go-openai's *APIError with status 401", err)
	}
	if got := sim.Total().Requests; got != 5 {
		t.Errorf("%d upstream requests, want one per key", got)
	}
}

func TestOpenAIGo(t *testing.T) { inVirtualTime(t, testOpenAIGo) }

func testOpenAIGo(t *testing.T) {
	sim, p, hc := deepseekFixture(t, map[string]fakeupstream.Fault{"sk-account0-0123456789abcdef": fakeupstream.FaultNoBalance})
	client := oai.NewClient(
		oaiopt.WithBaseURL(sim.URL+"/v1/"), oaiopt.WithAPIKey("placeholder"),
		oaiopt.WithHTTPClient(hc), oaiopt.WithMaxRetries(0),
	)
	params := oai.ChatCompletionNewParams{Model: "deepseek-chat", Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("hi")}}
	runLoad(20, 100, func(int) error {
		_, err := client.Chat.Completions.New(context.Background(), params)
		if err != nil {
			t.Error(err)
		}
		return err
	})
	if st := p.Stats()[0]; st.State != StateDisabled || st.Requests != 1 {
		t.Errorf("out-of-balance key: %v after %d requests", st.State, st.Requests)
	}
	stream := client.Chat.Completions.NewStreaming(context.Background(), params)
	frames := 0
	for stream.Next() {
		frames++
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	stream.Close()
	if frames != 4 {
		t.Errorf("stream gave %d frames, want 4", frames)
	}
}
