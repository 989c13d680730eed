// Command azure sends a chat completion, then a streamed one, to an Azure
// OpenAI deployment through keypool.
//
// It uses github.com/openai/openai-go/v3 with its azure package, the
// client Microsoft points Go users to for Azure OpenAI: azure.WithEndpoint
// puts the deployment in the path (/openai/deployments/{deployment}/...)
// and the api-version in the query. Azure takes the key in an api-key
// header, so the Transport is made with keypool.WithAuth(keypool.AuthAPIKey).
// Azure's 429s say how long to wait in retry-after-ms; keypool cools the
// key's account for that long and sends the request with another key.
//
// With KEYPOOL_KEYS (a key list in ParseKeys syntax) and KEYPOOL_BASE_URL
// (the resource's endpoint) set it talks to Azure, for example:
//
//	KEYPOOL_KEYS=key-a,key-b KEYPOOL_BASE_URL=https://my-resource.openai.azure.com \
//	KEYPOOL_AZURE_DEPLOYMENT=gpt-4o-mini go run ./examples/azure
//
// KEYPOOL_AZURE_DEPLOYMENT names the deployment (gpt-4o-mini by default)
// and KEYPOOL_AZURE_API_VERSION the API version (2024-10-21 by default).
// Keys of other resources can join the pool with a base option, such as
// "key-c;base=https://other-resource.openai.azure.com": their requests go
// to their own resource, which must have a deployment of the same name.
// Without KEYPOOL_KEYS and KEYPOOL_BASE_URL it talks to the built-in
// simulator, so it runs anywhere.
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
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/azure"
	"github.com/openai/openai-go/v3/option"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// simulatedKeys are the simulator's keys, in ParseKeys syntax.
const simulatedKeys = "azure-demo-aaaaaaaaaaaa0001;max=50, azure-demo-bbbbbbbbbbbb0002;max=50"

// run sends the two requests to the endpoint the environment names, or to
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
	// Azure takes the key in an api-key header.
	rt := keypool.NewTransport(pool, keypool.WithAuth(keypool.AuthAPIKey), keypool.WithBase(up.base))
	client := newClient(rt, up.baseURL, cmp.Or(os.Getenv("KEYPOOL_AZURE_API_VERSION"), "2024-10-21"))
	params := request(cmp.Or(os.Getenv("KEYPOOL_AZURE_DEPLOYMENT"), "gpt-4o-mini"))

	resp, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, resp.Choices[0].Message.Content)
	streamed, err := streamText(ctx, client, params)
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

// upstream returns the endpoint KEYPOOL_KEYS and KEYPOOL_BASE_URL name,
// or, when either is unset, a simulator serving simulatedKeys.
func upstream(out io.Writer) (target, error) {
	if baseURL := os.Getenv("KEYPOOL_BASE_URL"); os.Getenv("KEYPOOL_KEYS") != "" && baseURL != "" {
		keys, err := keypool.KeysFromEnv("KEYPOOL_KEYS") // for example "key-a;max=50, key-b;max=50;weight=2"
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

// newClient returns an openai-go client for the Azure OpenAI resource at
// endpoint that sends its requests through rt, a keypool Transport. opts
// are applied last.
func newClient(rt http.RoundTripper, endpoint, apiVersion string, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		azure.WithEndpoint(endpoint, apiVersion),
		// A placeholder, which keypool replaces with a pool key. It also
		// drops the bearer token the client may have read from
		// OPENAI_API_KEY (keypool would too).
		azure.WithAPIKey("unused"),
		option.WithHTTPClient(&http.Client{Transport: rt}),
		option.WithMaxRetries(0), // keypool retries, on another key
	}, opts...)...)
}

// request is a short chat completion request; with azure.WithEndpoint its
// model names the deployment.
func request(deployment string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    deployment,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello.")},
	}
}

// streamText sends params as a streamed request and returns the text the
// stream carried.
func streamText(ctx context.Context, client openai.Client, params openai.ChatCompletionNewParams) (string, error) {
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	defer stream.Close() // frees the key's slot even if the stream is left early
	var b strings.Builder
	for stream.Next() {
		for _, c := range stream.Current().Choices {
			b.WriteString(c.Delta.Content)
		}
	}
	return b.String(), stream.Err()
}
