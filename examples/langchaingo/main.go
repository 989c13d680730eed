// Command langchaingo sends a prompt, then a streamed one, through keypool
// with the llms/openai client of github.com/tmc/langchaingo.
//
// The client takes an HTTP client with openai.WithHTTPClient, and insists
// on a token of its own: it gets a placeholder, which keypool replaces
// with a pool key. langchaingo does not retry, so keypool's failover is
// the only one.
//
// With KEYPOOL_KEYS (a key list in ParseKeys syntax) and KEYPOOL_BASE_URL
// set it talks to that provider, for example:
//
//	KEYPOOL_KEYS=sk-a,sk-b KEYPOOL_BASE_URL=https://api.deepseek.com/v1 go run ./examples/langchaingo
//
// KEYPOOL_MODEL names the model, deepseek-chat by default. Without
// KEYPOOL_KEYS and KEYPOOL_BASE_URL it talks to the built-in simulator,
// so it runs anywhere.
package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeupstream"
	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/llms/openai"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// simulatedKeys are the simulator's keys, in ParseKeys syntax.
const simulatedKeys = "sk-demo-aaaaaaaaaaaaaaaa0001;max=50, sk-demo-bbbbbbbbbbbbbbbb0002;max=50"

// run sends the two prompts to the provider the environment names, or to
// the simulator, and prints the answers and the keys' stats to out.
func run(ctx context.Context, out io.Writer) error {
	up, err := upstream(out)
	if err != nil {
		return err
	}
	defer up.close()
	pool, err := keypool.New(up.keys)
	if err != nil {
		return err
	}
	rt := keypool.NewTransport(pool, keypool.WithBase(up.base))
	llm, err := newLLM(rt, up.baseURL, cmp.Or(os.Getenv("KEYPOOL_MODEL"), "deepseek-chat"))
	if err != nil {
		return err
	}

	answer, err := generate(ctx, llm, false)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, answer)
	streamed, err := generate(ctx, llm, true)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, strings.TrimSpace(streamed))
	for _, st := range pool.Stats() {
		fmt.Fprintf(out, "%-22s %-8s requests=%d successes=%d\n", st.Name, st.State, st.Requests, st.Successes)
	}
	return nil
}

// target is where the requests go.
type target struct {
	keys    []keypool.Key
	baseURL string
	base    http.RoundTripper // sends each attempt
	sim     *fakeupstream.Server
}

// upstream returns the provider KEYPOOL_KEYS and KEYPOOL_BASE_URL name,
// or, when either is unset, a simulator serving simulatedKeys.
func upstream(out io.Writer) (target, error) {
	if baseURL := os.Getenv("KEYPOOL_BASE_URL"); os.Getenv("KEYPOOL_KEYS") != "" && baseURL != "" {
		keys, err := keypool.KeysFromEnv("KEYPOOL_KEYS") // for example "sk-a;max=50, sk-b;max=50;weight=2"
		return target{keys: keys, baseURL: baseURL, base: http.DefaultTransport}, err
	}
	keys, err := keypool.ParseKeys(simulatedKeys)
	if err != nil {
		return target{}, err
	}
	simKeys := make(map[string]fakeupstream.Key, len(keys))
	for _, k := range keys {
		simKeys[k.Secret] = fakeupstream.Key{}
	}
	sim := fakeupstream.New(fakeupstream.Config{Keys: simKeys, StreamChunks: 3})
	fmt.Fprintln(out, "KEYPOOL_KEYS or KEYPOOL_BASE_URL not set: using the simulator")
	return target{keys: keys, baseURL: sim.URL + "/v1", base: sim.Client().Transport, sim: sim}, nil
}

// close stops the simulator, if the target is one.
func (t target) close() {
	if t.sim != nil {
		t.sim.Close()
	}
}

// newLLM returns a langchaingo OpenAI client for model at baseURL that
// sends its requests through rt, a keypool Transport.
func newLLM(rt http.RoundTripper, baseURL, model string) (*openai.LLM, error) {
	return openai.New(
		openai.WithToken("unused"), // required, and replaced by keypool with a pool key
		openai.WithBaseURL(baseURL),
		openai.WithModel(model),
		openai.WithHTTPClient(&http.Client{Transport: rt}),
	)
}

// generate sends a short prompt, streamed or not, and returns the answer.
func generate(ctx context.Context, llm *openai.LLM, stream bool) (string, error) {
	prompt := []llms.MessageContent{llms.TextParts(llms.ChatMessageTypeHuman, "Say hello.")}
	var streamed strings.Builder
	var opts []llms.CallOption
	if stream {
		opts = append(opts, llms.WithStreamingFunc(func(_ context.Context, chunk []byte) error {
			streamed.Write(chunk) // a real program would show it now
			return nil
		}))
	}
	resp, err := llm.GenerateContent(ctx, prompt, opts...)
	if err != nil {
		return "", err
	}
	if stream {
		return streamed.String(), nil
	}
	return resp.Choices[0].Content, nil
}
