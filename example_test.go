package keypool_test

import (
	"context"
	"fmt"
	"log"
	"net/http"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeupstream"
	openai "github.com/sashabaranov/go-openai"
)

// Example wires a pool of three keys into go-openai. One key has been
// revoked: it costs one failed attempt, after which the pool disables it
// and every request goes to the other two.
func Example() {
	upstream := fakeupstream.New(fakeupstream.Config{Keys: map[string]fakeupstream.Key{
		"sk-example-aaaaaaaaaaaa1111": {},
		"sk-example-bbbbbbbbbbbb2222": {},
		"sk-example-cccccccccccc3333": {Fault: fakeupstream.FaultRevoked},
	}})
	defer upstream.Close()

	pool, err := keypool.New([]keypool.Key{
		{Secret: "sk-example-aaaaaaaaaaaa1111", MaxConcurrent: 10},
		{Secret: "sk-example-bbbbbbbbbbbb2222", MaxConcurrent: 10},
		{Secret: "sk-example-cccccccccccc3333", MaxConcurrent: 10},
	})
	if err != nil {
		log.Fatal(err)
	}
	cfg := openai.DefaultConfig("")
	cfg.BaseURL = upstream.URL + "/v1"
	cfg.HTTPClient = &http.Client{Transport: keypool.NewTransport(pool, keypool.WithBase(upstream.Client().Transport))}
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
