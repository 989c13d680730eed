// Command openai-go sends one chat completion through keypool with
// github.com/openai/openai-go.
//
// With KEYPOOL_KEYS (a key list in ParseKeys syntax) and KEYPOOL_BASE_URL set it
// talks to that provider; without them, to the built-in simulator.
package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeupstream"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func main() {
	list, baseURL := os.Getenv("KEYPOOL_KEYS"), os.Getenv("KEYPOOL_BASE_URL")
	base := http.DefaultTransport
	if list == "" || baseURL == "" {
		secrets := []string{"sk-demo-aaaaaaaaaaaaaaaa0001", "sk-demo-bbbbbbbbbbbbbbbb0002"}
		list = strings.Join(secrets, ";max=50,") + ";max=50"
		sim := fakeupstream.New(fakeupstream.Config{Keys: map[string]fakeupstream.Key{secrets[0]: {}, secrets[1]: {}}})
		defer sim.Close()
		baseURL, base = sim.URL+"/v1/", sim.Client().Transport
		fmt.Println("KEYPOOL_KEYS or KEYPOOL_BASE_URL not set: using the simulator")
	}

	os.Setenv("KEYPOOL_KEYS", list)
	keys, err := keypool.KeysFromEnv("KEYPOOL_KEYS") // for example "sk-a;max=50, sk-b;max=50;weight=2"
	if err != nil {
		log.Fatal(err)
	}
	pool, err := keypool.New(keys)
	if err != nil {
		log.Fatal(err)
	}
	client := openai.NewClient(
		option.WithBaseURL(baseURL),
		option.WithAPIKey("unused"), // the pool replaces it
		option.WithHTTPClient(&http.Client{Transport: keypool.NewTransport(pool, keypool.WithBase(base))}),
		option.WithMaxRetries(0), // keypool retries, on another key
	)
	resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    "deepseek-chat",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello.")},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Choices[0].Message.Content)
	for _, st := range pool.Stats() {
		fmt.Printf("%-22s %-8s requests=%d successes=%d\n", st.Name, st.State, st.Requests, st.Successes)
	}
}
