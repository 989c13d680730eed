package keypool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
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

// Once a bug: a ModelMap that maps a model to the same name (listed only so
// that the key serves it) gets model_not_found from its provider; that
// answer goes to the caller and the key keeps serving the model, because
// the mapping is not counted as a mapping when the name does not change
// (mappedModel returns false, so lease.mapped stays "").
//
// Contract: a 400/404/422 model_not_found from a key serving a model
// through its ModelMap disables that mapping for the key, and the request
// goes on to another key that serves it.
func TestIdentityMappingModelNotFoundFailsOver(t *testing.T) {
	const mapped, plain = "sk-mapped-0123456789", "sk-plain-0123456789"
	up := newRecordingUpstream()
	up.handle(mapped, func(int, *http.Request) *http.Response { return jsonAnswer(404, modelNotFoundBody) })
	tr, p, _ := newFakeClockTransport(t, []Key{
		{Secret: mapped, Name: "mapped", Priority: 1, ModelMap: map[string]string{"deepseek-chat": "deepseek-chat", "other": "vendor/other"}},
		{Secret: plain, Name: "plain", Priority: 0},
	}, up, nil)
	code, body, err := postTo(t, tr, "application/json", chatBody)
	if err != nil || code != 200 {
		t.Errorf("got %d %s %v; want the plain key's 200 after the mapped key's model_not_found", code, body, err)
	}
	if got := p.Stats()[0].RefusedModels; !slices.Equal(got, []string{"deepseek-chat"}) {
		t.Errorf("mapped key's RefusedModels %v, want [deepseek-chat]", got)
	}
}

// Once a bug: a mapped key added to the pool while a request is under way
// (the pool had no key filtering models when the request began, so its
// model was never read) gets the caller's body with the caller's model
// name: the request's model is "" and a mapped key serves such requests
// as they are.
//
// Contract: a key with a ModelMap gets the request body with the model
// renamed; it must never receive the caller's name for a model it maps.
func TestMappedKeyAddedMidRequestNeverGetsCallerModel(t *testing.T) {
	const plain, mapped = "sk-plain-0123456789", "sk-mapped-0123456789"
	up := newRecordingUpstream()
	var p *Pool
	up.handle(plain, func(n int, _ *http.Request) *http.Response {
		if n == 0 {
			// While the first attempt is at the provider, the operator
			// adds a fallback provider with its own model names.
			if err := p.Add(Key{Secret: mapped, Name: "mapped", Priority: 1,
				ModelMap: map[string]string{askedModel: bModel}}); err != nil {
				t.Error(err)
			}
			return jsonAnswer(500, `{"error":{"message":"boom"}}`)
		}
		return nil
	})
	tr, pp, _ := newFakeClockTransport(t, []Key{{Secret: plain, Name: "plain"}}, up, nil)
	p = pp
	if code, _, err := postTo(t, tr, "application/json", chatBody); err != nil || code != 200 {
		t.Fatalf("got %d %v", code, err)
	}
	for _, s := range up.requests() {
		if s.secret == mapped && parseRequestMeta(s.body).Model != bModel {
			t.Errorf("the mapped key received model %q (%s), want %q", parseRequestMeta(s.body).Model, s.body, bModel)
		}
	}
}

// Once a bug: a JSON body sent with a Content-Type that is not JSON (curl -d
// sends application/x-www-form-urlencoded) is not read for its model, so
// a key whose ModelMap renames that model serves it with the caller's
// name, as "a request that names no model".
//
// Contract: a key with a ModelMap serves the models it maps (and its
// Models); the mapped provider must never be sent the caller's name.
// Either the body's model is renamed, or the key does not serve it.
func TestJSONBodyUnderOtherContentTypeIsRenamed(t *testing.T) {
	for _, ct := range []string{"application/x-www-form-urlencoded", "text/plain"} {
		t.Run(ct, func(t *testing.T) {
			const mapped, plain = "sk-mapped-0123456789", "sk-plain-0123456789"
			up := newRecordingUpstream()
			tr, _, _ := newFakeClockTransport(t, []Key{
				{Secret: mapped, Name: "mapped", Priority: 1, ModelMap: map[string]string{askedModel: bModel}},
				{Secret: plain, Name: "plain", Priority: 0},
			}, up, nil)
			if code, _, err := postTo(t, tr, ct, chatBody); err != nil || code != 200 {
				t.Fatalf("got %d %v", code, err)
			}
			for _, s := range up.requests() {
				if s.secret == mapped && bytes.Contains(s.body, []byte(`"`+askedModel+`"`)) {
					t.Errorf("the mapped key received the caller's model name: %s", s.body)
				}
			}
		})
	}
}

// Once a bug: the model is read with encoding/json, which matches member
// names without regard to case, so {"Model":"deepseek-chat"} is routed
// as a request for deepseek-chat to a key that maps it; the rewrite then
// looks for "model" exactly and changes nothing. The mapped provider
// gets the caller's name (and a Go provider, reading JSON the same way,
// uses it).
//
// Contract: the mapped key never receives the caller's name for a model
// it maps: what picks the key and what rewrites the body must agree.
func TestModelMemberCaseMismatchNeverReachesMappedKey(t *testing.T) {
	const mapped = "sk-mapped-0123456789"
	up := newRecordingUpstream()
	tr, _, _ := newFakeClockTransport(t, []Key{
		{Secret: mapped, Name: "mapped", ModelMap: map[string]string{askedModel: bModel}},
	}, up, nil)
	body := `{"Model":"deepseek-chat","messages":[{"role":"user","content":"hi"}]}`
	code, _, err := postTo(t, tr, "application/json", body)
	if err != nil {
		t.Logf("refused: %v (acceptable: the key does not serve a request it cannot rename)", err)
		return
	}
	for _, s := range up.requests() {
		if s.secret == mapped && bytes.Contains(s.body, []byte(`"`+askedModel+`"`)) {
			t.Errorf("HTTP %d; the mapped key received the caller's model name: %s", code, s.body)
		}
	}
}

// A JSON body too large for WithMaxBodyBytes, with GetBody set, cannot be
// read for its model: keys that rename models do not serve it; a plain
// lower-tier key does, with the body as it is.
func TestTooLargeBodyNeverGoesToMappedKey(t *testing.T) {
	const mapped, plain = "sk-mapped-0123456789", "sk-plain-0123456789"
	up := newRecordingUpstream()
	tr, _, _ := newFakeClockTransport(t, []Key{
		{Secret: mapped, Name: "mapped", Priority: 1, ModelMap: map[string]string{askedModel: bModel}},
		{Secret: plain, Name: "plain", Priority: 0},
	}, up, nil, WithMaxBodyBytes(64))
	body := `{"model":"deepseek-chat","messages":[{"role":"user","content":"` + strings.Repeat("x", 200) + `"}]}`
	code, _, err := postTo(t, tr, "application/json", body)
	if err != nil || code != 200 {
		t.Fatalf("got %d %v", code, err)
	}
	for _, s := range up.requests() {
		if s.secret == mapped {
			t.Errorf("the mapped key got a body it could not rename: %.60s…", s.body)
		}
		if s.secret == plain && string(s.body) != body {
			t.Errorf("the plain key got a changed body")
		}
	}
	// With only the mapped key, the request is refused, not sent.
	up2 := newRecordingUpstream()
	tr2, _, _ := newFakeClockTransport(t, []Key{
		{Secret: mapped, ModelMap: map[string]string{askedModel: bModel}},
	}, up2, nil, WithMaxBodyBytes(64))
	if _, _, err := postTo(t, tr2, "application/json", body); !errors.Is(err, ErrNoKeyAvailable) {
		t.Errorf("too large for the only (mapped) key: %v, want ErrNoKeyAvailable", err)
	}
	if n := len(up2.requests()); n != 0 {
		t.Errorf("the mapped key got %d requests", n)
	}
}

// A model_not_found from a key with no ModelMap is the caller's answer:
// nothing is disabled and the request is not retried elsewhere.
func TestModelNotFoundOnUnmappedKeyIsTheCallers(t *testing.T) {
	const a, b = "sk-a-0123456789", "sk-b-0123456789"
	up := newRecordingUpstream()
	up.handle(a, func(int, *http.Request) *http.Response { return jsonAnswer(404, modelNotFoundBody) })
	tr, p, _ := newFakeClockTransport(t, []Key{{Secret: a, Priority: 1}, {Secret: b}}, up, nil)
	code, body, err := postTo(t, tr, "application/json", chatBody)
	if err != nil || code != 404 || !strings.Contains(body, "model_not_found") {
		t.Fatalf("got %d %s %v; want the provider's 404", code, body, err)
	}
	if up.count(b) != 0 {
		t.Errorf("retried on another key")
	}
	for _, st := range p.Stats() {
		if st.RefusedModels != nil || st.State == StateDisabled || st.State == StateEjected {
			t.Errorf("%s: %v, RefusedModels %v", st.Name, st.State, st.RefusedModels)
		}
	}
}

// A classifier that says EffectModelNotFound about an unmapped key's
// answer retries the request as it asks but disables nothing; about a
// mapped key's answer, it refuses the mapping.
func TestClassifierModelNotFound(t *testing.T) {
	const mapped, plain, last = "sk-mapped-0123456789", "sk-plain-0123456789", "sk-last-0123456789"
	up := newRecordingUpstream()
	up.handle(mapped, func(int, *http.Request) *http.Response { return jsonAnswer(400, `{"error":{"message":"nope"}}`) })
	up.handle(plain, func(int, *http.Request) *http.Response { return jsonAnswer(400, `{"error":{"message":"nope"}}`) })
	classifier := func(resp *http.Response, err error, o Outcome) Outcome {
		if resp != nil && resp.StatusCode == 400 {
			return Outcome{Effect: EffectModelNotFound, Retry: RetryNow}
		}
		return o
	}
	tr, p, _ := newFakeClockTransport(t, []Key{
		{Secret: mapped, Name: "mapped", Priority: 2, ModelMap: map[string]string{askedModel: bModel}},
		{Secret: plain, Name: "plain", Priority: 1},
		{Secret: last, Name: "last", Priority: 0},
	}, up, nil, WithClassifier(classifier))
	code, _, err := postTo(t, tr, "application/json", chatBody)
	if err != nil || code != 200 {
		t.Fatalf("got %d %v", code, err)
	}
	if up.count(mapped) != 1 || up.count(plain) != 1 || up.count(last) != 1 {
		t.Errorf("requests %d %d %d, want 1 each", up.count(mapped), up.count(plain), up.count(last))
	}
	st := p.Stats()
	if !slices.Equal(st[0].RefusedModels, []string{askedModel}) || st[1].RefusedModels != nil || st[1].State != StateReady {
		t.Errorf("mapped: %v; plain: %v %v", st[0].RefusedModels, st[1].State, st[1].RefusedModels)
	}
}

// Every attempt of a request on a chain of mapped keys that all refuse
// the name: each mapping is disabled once, attempts stay within
// WithMaxAttempts, and the caller gets the provider's last answer.
func TestManyRefusingMappedTiersAreBounded(t *testing.T) {
	up := newRecordingUpstream()
	var keys []Key
	for i := range 8 {
		s := fmt.Sprintf("sk-mapped-%d-0123456789", i)
		keys = append(keys, Key{Secret: s, Priority: -i * 1000, ModelMap: map[string]string{askedModel: fmt.Sprintf("p%d/m", i)}})
		up.handle(s, func(int, *http.Request) *http.Response { return jsonAnswer(404, modelNotFoundBody) })
	}
	tr, p, _ := newFakeClockTransport(t, keys, up, nil, WithMaxAttempts(3))
	code, body, err := postTo(t, tr, "application/json", chatBody)
	if err != nil || code != 404 || !strings.Contains(body, "model_not_found") {
		t.Fatalf("got %d %s %v", code, body, err)
	}
	if n := len(up.requests()); n != 3 {
		t.Errorf("%d attempts, want WithMaxAttempts(3)", n)
	}
	refused := 0
	for _, st := range p.Stats() {
		refused += len(st.RefusedModels)
	}
	if refused != 3 {
		t.Errorf("%d mappings refused, want 3", refused)
	}
}

// Over real HTTP/1.1 on loopback, the server receives exactly the
// rewritten bytes, with a Content-Length that matches them, whether or
// not the caller set GetBody and whatever the caller's ContentLength.
func TestRewrittenBodyOnTheWire(t *testing.T) {
	type got struct {
		body    []byte
		cl      string
		te      []string
		content int64
	}
	var mu sync.Mutex
	var seen []got
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("server read: %v", err)
		}
		mu.Lock()
		seen = append(seen, got{b, r.Header.Get("Content-Length"), r.TransferEncoding, r.ContentLength})
		mu.Unlock()
		io.WriteString(w, `{}`)
	}))
	defer srv.Close()
	tr, _, _ := newFakeClockTransport(t, []Key{
		{Secret: "sk-mapped-0123456789", BaseURL: srv.URL, ModelMap: map[string]string{askedModel: "a-much-longer/provider-specific-model-name"}},
	}, srv.Client().Transport, nil)
	orig := `{ "model" : "deepseek-chat" , "messages":[{"role":"user","content":"héllo <&> \u00e9"}]}`
	want := strings.Replace(orig, `"deepseek-chat"`, `"a-much-longer/provider-specific-model-name"`, 1)
	for _, tc := range []struct {
		name      string
		getBody   bool
		length    int64
		chunked   bool
		noRewrite bool
	}{
		{"GetBody", true, int64(len(orig)), false, false},
		{"noGetBody", false, int64(len(orig)), false, false},
		{"unknownLength", false, -1, false, false},
		{"chunked", true, -1, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			req, _ := http.NewRequest(http.MethodPost, "http://caller.invalid/v1/chat/completions", strings.NewReader(orig))
			req.Header.Set("Content-Type", "application/json")
			req.ContentLength = tc.length
			if !tc.getBody {
				req.GetBody = nil
				req.Body = io.NopCloser(strings.NewReader(orig))
			}
			if tc.chunked {
				req.TransferEncoding = []string{"chunked"}
			}
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp)
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != 1 {
				t.Fatalf("%d requests", len(seen))
			}
			s := seen[0]
			if string(s.body) != want {
				t.Errorf("server got\n%s\nwant\n%s", s.body, want)
			}
			if s.content != int64(len(want)) && !(tc.chunked && s.content == -1) {
				t.Errorf("ContentLength %d (header %q, TE %v), body %d bytes", s.content, s.cl, s.te, len(s.body))
			}
			if req.ContentLength != tc.length {
				t.Errorf("the caller's ContentLength changed to %d", req.ContentLength)
			}
		})
	}
}

// A 307 with a relative Location from a mapped key's provider (BaseURL
// with a path): the client re-sends the caller's own body; the redirect
// goes to the provider's host, with its own key and auth style and the
// model renamed again; neither the caller's placeholder nor another
// provider's secret goes there.
func TestRedirectAfterRewrite(t *testing.T) {
	const aSecret, bSecret = "sk-provider-a-0123456789", "b-provider-key-abcdefgh"
	type hit struct {
		path, auth, apiKey string
		body               []byte
	}
	var mu sync.Mutex
	var bHits, aHits []hit
	record := func(hits *[]hit) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			*hits = append(*hits, hit{r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Api-Key"), b})
			mu.Unlock()
			if strings.HasSuffix(r.URL.Path, "/v1/chat/completions") && hits == &bHits {
				w.Header().Set("Location", "../v2/chat/completions")
				w.WriteHeader(http.StatusTemporaryRedirect)
				return
			}
			io.WriteString(w, `{}`)
		}
	}
	b := httptest.NewServer(record(&bHits))
	defer b.Close()
	a := httptest.NewServer(record(&aHits))
	defer a.Close()
	up := newRecordingUpstream()
	up.handle(aSecret, func(int, *http.Request) *http.Response { return jsonAnswer(503, `{"error":{"message":"down"}}`) })
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Header.Get("Authorization") == "Bearer "+aSecret {
			return up.RoundTrip(r) // A is down
		}
		return http.DefaultTransport.RoundTrip(r)
	})
	tr, _, _ := newFakeClockTransport(t, []Key{
		{Secret: aSecret, Priority: 1, BaseURL: a.URL},
		{Secret: bSecret, Priority: 0, BaseURL: b.URL + "/openai", Auth: AuthAPIKey, ModelMap: map[string]string{askedModel: bModel}},
	}, base, nil)
	client := &http.Client{Transport: tr}
	req, _ := http.NewRequest(http.MethodPost, "https://api.example.test/v1/chat/completions", strings.NewReader(chatBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer client-placeholder")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bHits) != 2 {
		t.Fatalf("B got %d requests: %+v", len(bHits), bHits)
	}
	for i, h := range bHits {
		if h.auth != "" || h.apiKey != bSecret {
			t.Errorf("B request %d (%s): Authorization %q, api-key %q", i, h.path, h.auth, maskSecret(h.apiKey))
		}
		if m := parseRequestMeta(h.body).Model; m != bModel {
			t.Errorf("B request %d (%s): model %q", i, h.path, m)
		}
	}
	// ../v2 from /openai/v1/chat/completions, as RFC 3986 resolves it.
	if bHits[1].path != "/openai/v1/v2/chat/completions" {
		t.Errorf("redirect went to %s", bHits[1].path)
	}
	if len(aHits) != 0 {
		t.Errorf("A's server got %d requests", len(aHits))
	}
}
