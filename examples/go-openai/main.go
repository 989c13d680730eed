// Command go-openai sends one chat completion through keypool with
// github.com/sashabaranov/go-openai.
//
// With KEYPOOL_KEYS (a key list in ParseKeys syntax) and KEYPOOL_BASE_URL set it
// talks to that provider, for example:
//
//	KEYPOOL_KEYS=sk-a,sk-b KEYPOOL_BASE_URL=https://api.deepseek.com/v1 go run ./examples/go-openai
//
// Without them it talks to the built-in simulator, so it runs anywhere.
package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeupstream"
	openai "github.com/sashabaranov/go-openai"
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
		baseURL, base = sim.URL+"/v1", sim.Client().Transport
		fmt.Println("KEYPOOL_KEYS or KEYPOOL_BASE_URL not set: using the simulator")
	}

	pool, err := keypool.New(keys)
	if err != nil {
		log.Fatal(err)
	}
	cfg := openai.DefaultConfig("") // the pool supplies the key
	cfg.BaseURL = baseURL
	cfg.HTTPClient = &http.Client{Transport: keypool.NewTransport(pool, keypool.WithBase(base))}
	client := openai.NewClientWithConfig(cfg)

	resp, err := client.CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model:    "deepseek-chat",
		Messages: []openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleUser, Content: "Say hello."}},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Choices[0].Message.Content)
	for _, st := range pool.Stats() {
		fmt.Printf("%-22s %-8s requests=%d successes=%d\n", st.Name, st.State, st.Requests, st.Successes)
	}
}
