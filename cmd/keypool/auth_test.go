package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/fakeupstream"
)

func TestClientTokens(t *testing.T) {
	sim := startSim(t, fakeupstream.Config{Keys: simKeys(keyA)})
	other := "tok-other-client-0000000000000000002"
	p := startProxy(t, map[string]string{
		"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": sim.URL, "KEYPOOL_TOKENS": token + ", " + other,
	})
	cases := []struct {
		name   string
		header http.Header
		want   int
	}{
		{"no token", http.Header{"Authorization": nil}, 401},
		{"wrong token", http.Header{"Authorization": {"Bearer tok-wrong"}}, 401},
		{"a token's prefix", http.Header{"Authorization": {"Bearer " + token[:len(token)-1]}}, 401},
		{"a token with more after it", http.Header{"Authorization": {"Bearer " + token + "x"}}, 401},
		{"the upstream key", http.Header{"Authorization": {"Bearer " + keyA}}, 401},
		{"token in x-api-key", http.Header{"Authorization": nil, "X-Api-Key": {token}}, 401},
		{"token in api-key", http.Header{"Authorization": nil, "Api-Key": {token}}, 401},
		{"basic scheme", http.Header{"Authorization": {"Basic " + token}}, 401},
		{"first token", nil, 200},
		{"second token", http.Header{"Authorization": {"Bearer " + other}}, 200},
		{"lower-case scheme", http.Header{"Authorization": {"bearer " + token}}, 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := sim.Total().Requests
			resp := p.do(t, "POST", "/v1/chat/completions", chatBody, c.header)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.want, body)
			}
			if c.want != 401 {
				return
			}
			e := apiErrorOf(t, string(body))
			if e.Type != "invalid_request_error" || e.Code != "invalid_api_key" {
				t.Errorf("error %+v, want OpenAI's invalid_api_key", e)
			}
			if resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
			}
			if n := sim.Total().Requests - before; n != 0 {
				t.Errorf("the upstream saw %d requests from an unauthorized client", n)
			}
		})
	}
}

func TestNoTokensOnlyOnLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:8787":  true,
		"127.0.0.2:8787":  true,
		"[::1]:8787":      true,
		"localhost:8787":  true,
		"0.0.0.0:8787":    false,
		":8787":           false,
		"[::]:8787":       false,
		"192.168.1.1:80":  false,
		"example.com:443": false,
	} {
		env := envFunc(map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": "https://api.deepseek.com", "KEYPOOL_ADDR": addr})
		_, err := loadConfig(nil, env, io.Discard)
		if ok && err != nil {
			t.Errorf("%s without tokens: %v", addr, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "KEYPOOL_TOKENS")) {
			t.Errorf("%s without tokens: err = %v, want a refusal naming KEYPOOL_TOKENS", addr, err)
		}
		withTokens := envFunc(map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": "https://api.deepseek.com",
			"KEYPOOL_ADDR": addr, "KEYPOOL_TOKENS": token})
		if _, err := loadConfig(nil, withTokens, io.Discard); err != nil {
			t.Errorf("%s with tokens: %v", addr, err)
		}
	}
}

func TestNoTokensOnLoopbackServesEveryone(t *testing.T) {
	sim := startSim(t, fakeupstream.Config{Keys: simKeys(keyA)})
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": sim.URL})
	resp := p.do(t, "POST", "/v1/chat/completions", chatBody, http.Header{"Authorization": nil})
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("status %d, want 200 from a loopback proxy without tokens", resp.StatusCode)
	}
}
