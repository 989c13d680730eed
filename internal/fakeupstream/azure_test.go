package fakeupstream_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/keypool/keypool/internal/fakeupstream"
)

const azurePath = "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"

func azure(t *testing.T, s *fakeupstream.Server, secret, body string) answer {
	t.Helper()
	return send(t, s, http.MethodPost, azurePath, map[string]string{"api-key": secret}, body)
}

func TestAzureDeploymentStandsForTheModel(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-a"), Models: []string{"gpt4o-prod", "gpt-4o"}})
	a := azure(t, s, "sk-a", `{"messages":[{"role":"user","content":"hi"}]}`)
	var got struct{ Model string }
	if err := json.Unmarshal([]byte(a.body), &got); a.status != 200 || err != nil || got.Model != "gpt4o-prod" {
		t.Fatalf("status %d, body %s", a.status, a.body)
	}
	if a := azure(t, s, "sk-a", `{"model":"gpt-4o","messages":[]}`); a.status != 200 {
		t.Errorf("with a model in the body: status %d", a.status)
	}
	if a := send(t, s, http.MethodPost, "/openai/deployments/other/chat/completions", map[string]string{"api-key": "sk-a"}, `{}`); a.status != 404 {
		t.Errorf("unknown deployment: status %d", a.status)
	}
	c := s.Counters("sk-a")
	if c.Models["gpt4o-prod"] != 1 || c.Models["gpt-4o"] != 1 || c.Models["other"] != 1 || c.AuthHeaders["Api-Key"] != 3 {
		t.Errorf("counters %+v", c)
	}
}

func TestAzureRateLimitsCarryRetryAfterMs(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		s := fakeupstream.NewInMemory(fakeupstream.Config{
			Mode:     fakeupstream.OpenAI,
			Accounts: map[string]fakeupstream.Account{"sk-a": {RPM: 6}},
			Keys:     keys("sk-a"),
		})
		defer s.Close()
		var a answer
		for range 7 {
			a = azure(t, s, "sk-a", `{"messages":[]}`)
		}
		if a.status != 429 || a.header.Get("Retry-After") != "10" || a.header.Get("Retry-After-Ms") != "10001" ||
			a.header.Get("X-Ratelimit-Remaining-Requests") != "0" {
			t.Errorf("status %d, headers %v", a.status, a.header)
		}
	})
}
