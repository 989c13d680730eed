// Command anthropic sends a Messages request, then a streamed one,
// through keypool with github.com/anthropics/anthropic-sdk-go.
//
// Anthropic takes the key in an x-api-key header, so the Transport is
// made with keypool.WithAuth(keypool.AuthXAPIKey). keypool fails over on
// Anthropic's 429 rate_limit_error (cooling the account for as long as
// its retry-after says) and on 529 overloaded_error (backing off, then
// another key), and never replays a stream once it has started.
//
// With KEYPOOL_KEYS (a key list in ParseKeys syntax) and KEYPOOL_BASE_URL
// set it talks to that provider, for example:
//
//	KEYPOOL_KEYS=sk-ant-a,sk-ant-b KEYPOOL_BASE_URL=https://api.anthropic.com go run ./examples/anthropic
//
// KEYPOOL_MODEL names the model, claude-haiku-4-5 by default. Without
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

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeupstream"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// simulatedKeys are the simulator's keys, in ParseKeys syntax.
const simulatedKeys = "sk-ant-demo-aaaaaaaaaaaa0001;max=50, sk-ant-demo-bbbbbbbbbbbb0002;max=50"

// run sends the two requests to the provider the environment names, or
// to the simulator, and prints the answers and the keys' stats to out.
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
	// Anthropic takes the key in an x-api-key header.
	rt := keypool.NewTransport(pool, keypool.WithAuth(keypool.AuthXAPIKey), keypool.WithBase(up.base))
	client := newClient(rt, up.baseURL)
	params := request(cmp.Or(os.Getenv("KEYPOOL_MODEL"), string(anthropic.ModelClaudeHaiku4_5)))

	msg, err := client.Messages.New(ctx, params)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, text(msg))
	streamed, err := streamText(ctx, client, params)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, strings.TrimSpace(streamed))
	for _, st := range pool.Stats() {
		fmt.Fprintf(out, "%-26s %-8s requests=%d successes=%d\n", st.Name, st.State, st.Requests, st.Successes)
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
		keys, err := keypool.KeysFromEnv("KEYPOOL_KEYS") // for example "sk-ant-a;max=50, sk-ant-b;max=50;weight=2"
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
	return target{keys: keys, baseURL: sim.URL, base: sim.Client().Transport, sim: sim}, nil
}

// close stops the simulator, if the target is one.
func (t target) close() {
	if t.sim != nil {
		t.sim.Close()
	}
}

// newClient returns an Anthropic client that sends its requests to
// baseURL through rt, a keypool Transport. opts are applied last.
func newClient(rt http.RoundTripper, baseURL string, opts ...option.RequestOption) anthropic.Client {
	return anthropic.NewClient(append([]option.RequestOption{
		// The pool supplies the keys: the SDK need not look for
		// ANTHROPIC_API_KEY, a profile or ANTHROPIC_BASE_URL.
		option.WithoutEnvironmentDefaults(),
		// A placeholder, which keypool replaces with a pool key. Reading
		// its environment, the SDK refuses to send a request without one.
		option.WithAPIKey("unused"),
		option.WithBaseURL(baseURL),
		option.WithHTTPClient(&http.Client{Transport: rt}),
		option.WithMaxRetries(0), // keypool retries, on another key
	}, opts...)...)
}

// request is a short Messages request to model.
func request(model string) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     anthropic.Model(model),
		MaxTokens: 64,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Say hello."))},
	}
}

// streamText sends params as a streamed request and returns the text the
// stream carried.
func streamText(ctx context.Context, client anthropic.Client, params anthropic.MessageNewParams) (string, error) {
	stream := client.Messages.NewStreaming(ctx, params)
	defer stream.Close() // frees the key's slot even if the stream is left early
	var msg anthropic.Message
	for stream.Next() {
		if err := msg.Accumulate(stream.Current()); err != nil {
			return "", err
		}
	}
	if err := stream.Err(); err != nil {
		return "", err
	}
	return text(&msg), nil
}

// text is the text of a message's text blocks.
func text(msg *anthropic.Message) string {
	var b strings.Builder
	for _, block := range msg.Content {
		if block.Type == "text" {
			b.WriteString(block.Text)
		}
	}
	return b.String()
}
