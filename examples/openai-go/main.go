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

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeupstream"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// simulatedKeys are the simulator's keys, in ParseKeys syntax.
const simulatedKeys = "sk-demo-aaaaaaaaaaaaaaaa0001;max=50, sk-demo-bbbbbbbbbbbbbbbb0002;max=50"

func main() {
	var keys []keypool.Key
	var err error
	baseURL, base := os.Getenv("KEYPOOL_BASE_URL"), http.DefaultTransport
	if os.Getenv("KEYPOOL_KEYS") != "" && baseURL != "" {
		keys, err = keypool.KeysFromEnv("KEYPOOL_KEYS") // for example "sk-a;max=50, sk-b;max=50;weight=2"
		if err != nil {
			log.Fatal(err)
		}
	} else {
		if keys, err = keypool.ParseKeys(simulatedKeys); err != nil {
			log.Fatal(err)
		}
		simKeys := make(map[string]fakeupstream.Key, len(keys))
		for _, k := range keys {
			simKeys[k.Secret] = fakeupstream.Key{}
		}
		sim := fakeupstream.New(fakeupstream.Config{Keys: simKeys})
		defer sim.Close()
		baseURL, base = sim.URL+"/v1/", sim.Client().Transport
		fmt.Println("KEYPOOL_KEYS or KEYPOOL_BASE_URL not set: using the simulator")
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
