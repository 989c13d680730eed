package keypool

import (
	"context"
	"errors"
	"net/http"
	"testing"

	oai "github.com/openai/openai-go/v3"
	oaiopt "github.com/openai/openai-go/v3/option"
	goopenai "github.com/sashabaranov/go-openai"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// headersFixture is a revoked key tried first and a good one, so that a
// request takes two attempts and the good key serves it.
func headersFixture(t *testing.T, opts ...TransportOption) (*http.Client, string) {
	t.Helper()
	sim := startInMemorySim(t, fakeupstream.Config{StreamChunks: 2,
		Keys: simKeys(map[string]fakeupstream.Fault{"sk-revoked-0123456789": fakeupstream.FaultRevoked}, "sk-revoked-0123456789", "sk-good-0123456789ab")})
	p := newRealClockPool(t, []Key{{Secret: "sk-revoked-0123456789", Name: "revoked", Weight: 1000}, {Secret: "sk-good-0123456789ab"}})
	return &http.Client{Transport: NewTransport(p, append([]TransportOption{WithBase(sim.Client().Transport)}, opts...)...)}, sim.URL + "/v1"
}

// Which key served, and after how many attempts, as the clients'
// response-header accessors show it.
func TestResponseHeadersThroughClients(t *testing.T) {
	goodName := maskSecret("sk-good-0123456789ab")
	for _, on := range []bool{true, false} {
		wantKey, wantAttempts := goodName, "2"
		if !on {
			wantKey, wantAttempts = "", ""
		}
		check := func(t *testing.T, h http.Header) {
			t.Helper()
			if h.Get("Keypool-Key") != wantKey || h.Get("Keypool-Attempts") != wantAttempts {
				t.Errorf("Keypool-Key %q, Keypool-Attempts %q; want %q and %q", h.Get("Keypool-Key"), h.Get("Keypool-Attempts"), wantKey, wantAttempts)
			}
		}
		opts := []TransportOption{}
		if !on {
			opts = append(opts, WithResponseHeaders(false))
		}
		t.Run("go-openai", func(t *testing.T) {
			hc, url := headersFixture(t, opts...)
			cfg := goopenai.DefaultConfig("placeholder")
			cfg.BaseURL, cfg.HTTPClient = url, hc
			client := goopenai.NewClientWithConfig(cfg)
			req := goopenai.ChatCompletionRequest{Model: "deepseek-chat", Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "hi"}}}
			resp, err := client.CreateChatCompletion(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			check(t, resp.Header())

			hc, url = headersFixture(t, opts...)
			cfg.BaseURL, cfg.HTTPClient = url, hc
			stream, err := goopenai.NewClientWithConfig(cfg).CreateChatCompletionStream(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Close()
			check(t, stream.Header())
		})
		t.Run("openai-go", func(t *testing.T) {
			hc, url := headersFixture(t, opts...)
			client := oai.NewClient(oaiopt.WithBaseURL(url+"/"), oaiopt.WithAPIKey("placeholder"), oaiopt.WithHTTPClient(hc), oaiopt.WithMaxRetries(0))
			var raw *http.Response
			params := oai.ChatCompletionNewParams{Model: "deepseek-chat", Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("hi")}}
			if _, err := client.Chat.Completions.New(context.Background(), params, oaiopt.WithResponseInto(&raw)); err != nil {
				t.Fatal(err)
			}
			check(t, raw.Header)
		})
	}
}

// An answer kept from an earlier attempt, handed back when the last one
// got none, names the key that gave it.
func TestResponseHeadersOnAnAnswerKeptForLater(t *testing.T) {
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Header.Get("Authorization") == "Bearer sk-a-0123456789abcd" {
			return answer(http.StatusInternalServerError), nil
		}
		return nil, errors.New("connection refused")
	})
	tr, _, _ := newFakeClockTransport(t, []Key{{Secret: "sk-a-0123456789abcd", Name: "a", Weight: 1000}, {Secret: "sk-b-0123456789abcd", Name: "b"}},
		base, nil, WithMaxAttempts(2))
	resp, err := post(t, tr, "http://upstream.test", chatBody)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != 500 || resp.Header.Get("Keypool-Attempts") != "2" || resp.Header.Get("Keypool-Key") != "a" {
		t.Errorf("%d, Keypool-Key %q, Keypool-Attempts %q", resp.StatusCode, resp.Header.Get("Keypool-Key"), resp.Header.Get("Keypool-Attempts"))
	}
}
