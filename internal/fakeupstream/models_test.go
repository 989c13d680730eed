package fakeupstream_test

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"testing"

	"github.com/keypool/keypool/internal/fakeupstream"
)

func TestUnknownModelIsNotFound(t *testing.T) {
	s := start(t, fakeupstream.Config{
		Keys:   map[string]fakeupstream.Key{"sk-a": {}, "sk-revoked": {Fault: fakeupstream.FaultRevoked}},
		Models: []string{"deepseek-chat", "deepseek-reasoner"},
	})
	if a := chat(t, s, "sk-a", chatBody); a.status != 200 {
		t.Fatalf("known model: status %d", a.status)
	}
	a := chat(t, s, "sk-a", `{"model":"gpt-5","messages":[]}`)
	if a.status != 404 {
		t.Fatalf("unknown model: status %d", a.status)
	}
	e := decodeOpenAIError(t, a.body)
	if e.Error.Message != "The model `gpt-5` does not exist" || e.Error.Type != "invalid_request_error" || e.Error.Code != "model_not_found" {
		t.Errorf("body %s", a.body)
	}
	if a := chat(t, s, "sk-revoked", `{"model":"gpt-5"}`); a.status != 401 {
		t.Errorf("revoked key, unknown model: status %d", a.status)
	}
	c := s.Counters("sk-a")
	if c.Requests != 2 || c.NotFound != 1 || c.OK != 1 || !maps.Equal(c.Models, map[string]int{"deepseek-chat": 1, "gpt-5": 1}) {
		t.Errorf("counters %+v", c)
	}
}

func TestCountersTellModelsAndAuthHeaders(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-a", "sk-b")})
	for _, h := range []map[string]string{
		{"Authorization": "Bearer sk-a"},
		{"api-key": "sk-a"},
		{"x-api-key": "sk-a"},
		{"X-Api-Key": "sk-b"},
	} {
		if a := send(t, s, http.MethodPost, "/v1/chat/completions", h, chatBody); a.status != 200 {
			t.Fatalf("%v: status %d", h, a.status)
		}
	}
	send(t, s, http.MethodPost, "/v1/chat/completions", map[string]string{"Authorization": "Bearer sk-b"}, `{"model":"gpt-4o"}`)
	a := s.Counters("sk-a")
	if !maps.Equal(a.AuthHeaders, map[string]int{"Authorization": 1, "Api-Key": 1, "X-Api-Key": 1}) || a.Models["deepseek-chat"] != 3 {
		t.Errorf("sk-a: %+v", a)
	}
	a.Models["deepseek-chat"] = 100 // a copy: the server's counts stay
	total := s.Total()
	if !maps.Equal(total.Models, map[string]int{"deepseek-chat": 4, "gpt-4o": 1}) || total.AuthHeaders["X-Api-Key"] != 2 {
		t.Errorf("total: %+v", total)
	}
}

// modelList is OpenAI's answer to GET /v1/models.
type modelList struct {
	Object string `json:"object"`
	Data   []struct {
		ID     string `json:"id"`
		Object string `json:"object"`
	} `json:"data"`
}

func listModels(t *testing.T, s *fakeupstream.Server, path, secret string) (int, []string) {
	t.Helper()
	a := send(t, s, http.MethodGet, path, map[string]string{"Authorization": "Bearer " + secret}, "")
	if a.status != 200 {
		return a.status, nil
	}
	var l modelList
	if err := json.Unmarshal([]byte(a.body), &l); err != nil || l.Object != "list" {
		t.Fatalf("model list %s (%v)", a.body, err)
	}
	var ids []string
	for _, m := range l.Data {
		if m.Object != "model" {
			t.Errorf("entry %+v", m)
		}
		ids = append(ids, m.ID)
	}
	return a.status, ids
}

func TestModelList(t *testing.T) {
	s := start(t, fakeupstream.Config{
		Keys:   map[string]fakeupstream.Key{"sk-a": {}, "sk-revoked": {Fault: fakeupstream.FaultRevoked}},
		Models: []string{"m1", "m2"},
	})
	for _, path := range []string{"/v1/models", "/models"} {
		if status, ids := listModels(t, s, path, "sk-a"); status != 200 || !slices.Equal(ids, []string{"m1", "m2"}) {
			t.Errorf("%s: %d %v", path, status, ids)
		}
	}
	if status, _ := listModels(t, s, "/v1/models", "sk-revoked"); status != 401 {
		t.Errorf("revoked key: %d", status)
	}
	if c := s.Counters("sk-a"); c.ModelLists != 2 || c.Requests != 0 {
		t.Errorf("counters %+v", c)
	}
	s = start(t, fakeupstream.Config{Keys: keys("sk-a")})
	if _, ids := listModels(t, s, "/v1/models", "sk-a"); !slices.Contains(ids, "deepseek-chat") || !slices.Contains(ids, "gpt-4o") {
		t.Errorf("default list %v", ids)
	}
}
