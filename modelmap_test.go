package keypool

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	oai "github.com/openai/openai-go/v3"
	oaiopt "github.com/openai/openai-go/v3/option"
	goopenai "github.com/sashabaranov/go-openai"

	"github.com/keypool/keypool/internal/fakeupstream"
)

func TestRewriteModel(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"model":"deepseek-chat","n":1}`, `{"model":"deepseek/deepseek-chat","n":1}`},
		{"{ \"n\" : 1 ,\n \"model\" :\t\"deepseek-chat\" }", "{ \"n\" : 1 ,\n \"model\" :\t\"deepseek/deepseek-chat\" }"},
		// Only the top level: nested "model" members stay.
		{`{"tools":[{"model":"x"}],"meta":{"model":"y"},"model":"z"}`, `{"tools":[{"model":"x"}],"meta":{"model":"y"},"model":"deepseek/deepseek-chat"}`},
		// An escaped member name is the same name.
		{`{"mod\u0065l":"a"}`, `{"mod\u0065l":"deepseek/deepseek-chat"}`},
		// Every top-level "model", whichever a provider reads.
		{`{"model":"a","model":"b"}`, `{"model":"deepseek/deepseek-chat","model":"deepseek/deepseek-chat"}`},
		// Escapes inside the old value are replaced with it.
		{`{"model":"deep\"seek"}`, `{"model":"deepseek/deepseek-chat"}`},
		// Not rewritten: no string model, not an object, not JSON.
		{`{"model":null}`, `{"model":null}`},
		{`{"model":["a"]}`, `{"model":["a"]}`},
		{`["model","a"]`, `["model","a"]`},
		{`{"model":"a"`, `{"model":"a"`},
		{`{"model":"a"} {}`, `{"model":"a"} {}`},
		{``, ``},
	} {
		if got := string(rewriteModel([]byte(tc.body), bModel)); got != tc.want {
			t.Errorf("rewriteModel(%s) = %s, want %s", tc.body, got, tc.want)
		}
	}
	// A name with characters JSON may escape is written as it is, but
	// for what JSON must escape.
	if got := string(rewriteModel([]byte(`{"model":"a"}`), `x<&>"y`)); got != `{"model":"x<&>\"y"}` {
		t.Errorf("rewritten to %s", got)
	}
}

// For any body, the rewrite is the same bytes, or valid JSON whose only
// change is the top-level model, and every byte outside the model values
// is as it was.
func FuzzRewriteModel(f *testing.F) {
	for _, seed := range []string{
		chatBody, `{"model":"a","model":"b"}`, `{"a":{"model":"b"},"model":"c"}`, `{"mod\u0065l" : "x"}`,
		`{"model":1}`, `[]`, `{`, ` {"model":"a"} `, `{"model":"a\u0000"}`,
	} {
		f.Add([]byte(seed), bModel)
	}
	f.Fuzz(func(t *testing.T, body []byte, to string) {
		if !isValidString(to) {
			return // a model name comes from a Go string the caller chose; JSON needs it valid
		}
		out := rewriteModel(body, to)
		if bytes.Equal(out, body) {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("rewrote %q into invalid JSON %q", body, out)
		}
		var before, after map[string]json.RawMessage
		if json.Unmarshal(body, &before) != nil || json.Unmarshal(out, &after) != nil {
			t.Fatalf("rewrote %q, not a JSON object, into %q", body, out)
		}
		var model string
		if json.Unmarshal(after["model"], &model) != nil || model != to {
			t.Fatalf("model is %s after rewriting %q to %q", after["model"], body, to)
		}
		delete(before, "model")
		delete(after, "model")
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("rewriting %q changed more than the model: %q", body, out)
		}
		// Outside the values, the bytes are the same.
		spans := modelValueSpans(body)
		value := encodeJSONString(to)
		rebuilt, at := []byte{}, 0
		for _, s := range spans {
			rebuilt = append(append(rebuilt, body[at:s.start]...), value...)
			at = s.end
		}
		if rebuilt = append(rebuilt, body[at:]...); !bytes.Equal(rebuilt, out) {
			t.Fatalf("rewrite of %q is %q, not the body with its values replaced", body, out)
		}
	})
}

func isValidString(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// mappedPair is a pool of two keys on one simulator: "mapped" (priority
// 1, renaming the model) and "plain" (priority 0). Every request the
// simulator receives is recorded, by key.
type mappedPair struct {
	client *http.Client
	sim    *fakeupstream.Server
	mu     sync.Mutex
	bodies map[string][][]byte // by key name
}

const (
	mappedSecret = "sk-mapped-0123456789abcdef"
	plainSecret  = "sk-plain-0123456789abcdef"
)

// newMappedPair starts the pair; with mappedFails, the mapped key's
// answers are all 500s.
func newMappedPair(t *testing.T, mappedFails bool, wrap func(http.RoundTripper) http.RoundTripper) *mappedPair {
	t.Helper()
	mp := &mappedPair{bodies: map[string][][]byte{}}
	mp.sim = startInMemorySim(t, fakeupstream.Config{Keys: simKeys(nil, mappedSecret, plainSecret), StreamChunks: 3})
	p := newRealClockPool(t, []Key{
		{Secret: mappedSecret, Name: "mapped", Priority: 1, ModelMap: map[string]string{askedModel: bModel}},
		{Secret: plainSecret, Name: "plain"},
	})
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		body, _ := io.ReadAll(req.Body)
		req.Body.Close()
		name := "plain"
		if strings.Contains(req.Header.Get("Authorization"), mappedSecret) {
			name = "mapped"
		}
		mp.mu.Lock()
		mp.bodies[name] = append(mp.bodies[name], body)
		mp.mu.Unlock()
		if name == "mapped" && mappedFails {
			return answer(http.StatusInternalServerError), nil
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		return mp.sim.Client().Transport.RoundTrip(req)
	})
	var rt http.RoundTripper = NewTransport(p, WithBase(base))
	if wrap != nil {
		rt = wrap(rt)
	}
	mp.client = &http.Client{Transport: rt}
	return mp
}

func (mp *mappedPair) sent(name string) [][]byte {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	return slices.Clone(mp.bodies[name])
}

// callerCheck sits between a client and keypool: it records the body
// the client sent, optionally drops GetBody, and after the round trip
// checks that keypool left the request as it was.
type callerCheck struct {
	t          *testing.T
	next       http.RoundTripper
	noGetBody  bool
	mu         sync.Mutex
	sentBodies [][]byte
}

func (c *callerCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.GetBody != nil {
		rc, _ := req.GetBody()
		body, _ = io.ReadAll(rc)
	}
	if c.noGetBody {
		body, _ = io.ReadAll(req.Body)
		req = req.Clone(req.Context())
		req.Body, req.GetBody = io.NopCloser(bytes.NewReader(body)), nil
	}
	c.mu.Lock()
	c.sentBodies = append(c.sentBodies, body)
	c.mu.Unlock()
	before := req.Clone(req.Context())
	resp, err := c.next.RoundTrip(req)
	if !reflect.DeepEqual(req.Header, before.Header) || req.ContentLength != before.ContentLength || req.URL.String() != before.URL.String() {
		c.t.Errorf("keypool changed the caller's request: %v %d %v", req.Header, req.ContentLength, req.URL)
	}
	if req.GetBody != nil {
		rc, _ := req.GetBody()
		if again, _ := io.ReadAll(rc); !bytes.Equal(again, body) {
			c.t.Errorf("the caller's GetBody now gives %s, not %s", again, body)
		}
	}
	return resp, err
}

// Requests of go-openai and openai-go, streamed and not, with GetBody
// and without, reach a key whose ModelMap renames their model with only
// the model changed, and any other key as the client sent them.
func TestModelMapRewritesOnlyTheModel(t *testing.T) {
	clients := map[string]func(ctx context.Context, hc *http.Client, url string, stream bool) error{
		"go-openai": goOpenAIChat,
		"openai-go": openAIGoChat,
	}
	for name, chat := range clients {
		for _, stream := range []bool{false, true} {
			for _, noGetBody := range []bool{false, true} {
				for _, mappedFails := range []bool{false, true} {
					t.Run(fmt.Sprintf("%s/stream=%v/noGetBody=%v/mappedFails=%v", name, stream, noGetBody, mappedFails), func(t *testing.T) {
						inVirtualTime(t, func(t *testing.T) {
							check := &callerCheck{t: t, noGetBody: noGetBody}
							mp := newMappedPair(t, mappedFails, func(rt http.RoundTripper) http.RoundTripper {
								check.next = rt
								return check
							})
							if err := chat(context.Background(), mp.client, mp.sim.URL+"/v1", stream); err != nil {
								t.Fatal(err)
							}
							checkRewrites(t, check.sentBodies, mp, mappedFails)
						})
					})
				}
			}
		}
	}
}

func checkRewrites(t *testing.T, sentBodies [][]byte, mp *mappedPair, mappedFails bool) {
	t.Helper()
	if len(sentBodies) != 1 {
		t.Fatalf("the client sent %d requests", len(sentBodies))
	}
	orig := sentBodies[0]
	want := bytes.Replace(orig, []byte(`"model":"`+askedModel+`"`), []byte(`"model":"`+bModel+`"`), 1)
	if bytes.Equal(want, orig) {
		t.Fatalf("the client's body names no %s: %s", askedModel, orig)
	}
	mapped, plain := mp.sent("mapped"), mp.sent("plain")
	if len(mapped) != 1 {
		t.Fatalf("the mapped key got %d requests, want 1", len(mapped))
	}
	if !bytes.Equal(mapped[0], want) {
		t.Errorf("the mapped key got\n%s\nwant\n%s", mapped[0], want)
	}
	wantPlain := 0
	if mappedFails {
		wantPlain = 1
	}
	if len(plain) != wantPlain {
		t.Fatalf("the plain key got %d requests, want %d", len(plain), wantPlain)
	}
	if wantPlain == 1 && !bytes.Equal(plain[0], orig) {
		t.Errorf("the plain key got\n%s\nwant the client's\n%s", plain[0], orig)
	}
}

func goOpenAIChat(ctx context.Context, hc *http.Client, url string, stream bool) error {
	cfg := goopenai.DefaultConfig("placeholder")
	cfg.BaseURL, cfg.HTTPClient = url, hc
	client := goopenai.NewClientWithConfig(cfg)
	req := goopenai.ChatCompletionRequest{Model: askedModel, Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "hi <&>"}}}
	if !stream {
		_, err := client.CreateChatCompletion(ctx, req)
		return err
	}
	s, err := client.CreateChatCompletionStream(ctx, req)
	if err != nil {
		return err
	}
	defer s.Close()
	for {
		if _, err := s.Recv(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

func openAIGoChat(ctx context.Context, hc *http.Client, url string, stream bool) error {
	client := oai.NewClient(oaiopt.WithBaseURL(url+"/"), oaiopt.WithAPIKey("placeholder"),
		oaiopt.WithHTTPClient(hc), oaiopt.WithMaxRetries(0))
	params := oai.ChatCompletionNewParams{Model: askedModel, Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("hi <&>")}}
	if !stream {
		_, err := client.Chat.Completions.New(ctx, params)
		return err
	}
	s := client.Chat.Completions.NewStreaming(ctx, params)
	defer s.Close()
	for s.Next() {
	}
	return s.Err()
}

// A model_not_found from a key whose ModelMap renamed the model stops
// that mapping, not the request: it goes on to a key that serves the
// model, and Stats names the refused model.
func TestModelNotFoundDisablesTheMapping(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		tp := newTwoProviders(t, nil, func(c *fakeupstream.Config) { c.Models = []string{"some/other-name"} })
		for range 3 {
			if err := tp.send(); err != nil {
				t.Fatal(err)
			}
		}
		// A serves every request; a B key that got one answered 404 and
		// serves the model no more.
		b := tp.b.Total()
		if b.NotFound > 2 || tp.a.Total().OK != 3 {
			t.Errorf("B answered %d 404s, A %d 200s; want at most one 404 per B key, and 3", b.NotFound, tp.a.Total().OK)
		}
		for _, st := range tp.pool.Stats() {
			refused := st.Priority == 0 && st.Requests > 0
			if got := len(st.RefusedModels) > 0; got != refused || refused && st.RefusedModels[0] != askedModel {
				t.Errorf("%s: %d requests, RefusedModels %v", st.Name, st.Requests, st.RefusedModels)
			}
		}
	})
}

// A model_not_found answer is handed to the caller when no other key
// serves the model; the mapping comes back after WithDisableFor.
func TestModelNotFoundWithNoOtherKey(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		sim := startInMemorySim(t, fakeupstream.Config{Keys: simKeys(nil, mappedSecret), Models: []string{"other"}})
		p := newRealClockPool(t, []Key{{Secret: mappedSecret, ModelMap: map[string]string{askedModel: bModel}}}, WithDisableFor(time.Minute))
		client := &http.Client{Transport: NewTransport(p, WithBase(sim.Client().Transport))}
		resp, err := post(t, client.Transport, sim.URL, chatBody)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "model_not_found") {
			t.Errorf("got %d %s, want the provider's 404", resp.StatusCode, body)
		}
		if got := p.Stats()[0].RefusedModels; !slices.Equal(got, []string{askedModel}) {
			t.Errorf("RefusedModels %v", got)
		}
		if _, err := post(t, client.Transport, sim.URL, chatBody); err == nil {
			t.Errorf("a refused mapping served again at once")
		}
		time.Sleep(time.Minute)
		if got := p.Stats()[0].RefusedModels; got != nil {
			t.Errorf("RefusedModels %v after WithDisableFor", got)
		}
		resp, err = post(t, client.Transport, sim.URL, chatBody)
		if err != nil {
			t.Fatalf("the mapping did not come back: %v", err)
		}
		resp.Body.Close()
	})
}

func TestIsModelRefusal(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		want   bool
	}{
		{404, `{"error":{"message":"The model 'x' does not exist","type":"invalid_request_error","code":"model_not_found"}}`, true},
		{404, `{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}`, true},
		{400, `{"error":{"message":"Model Not Exist","type":"invalid_request_error"}}`, true},                    // DeepSeek
		{400, `{"error":{"message":"x/y is not a valid model ID","code":400}}`, true},                            // OpenRouter
		{404, `{"type":"error","error":{"type":"not_found_error","message":"model: claude-x"}}`, true},           // Anthropic
		{400, `{"error":{"message":"messages: field required","type":"invalid_request_error"}}`, false},          // the request's fault
		{400, `{"error":{"message":"This model does not support tools","type":"invalid_request_error"}}`, false}, // the model exists
		{500, `{"error":{"code":"model_not_found"}}`, false},
		{401, `{"error":{"code":"model_not_found"}}`, false},
	} {
		if got := isModelRefusal(tc.status, parseErrorBody([]byte(tc.body))); got != tc.want {
			t.Errorf("isModelRefusal(%d, %s) = %v, want %v", tc.status, tc.body, got, tc.want)
		}
	}
}
