package keypool

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestMaskSecret(t *testing.T) {
	tests := []struct{ secret, want string }{
		{"sk-0123456789abcdefwxyz", "sk-…wxyz"},
		{"sk-proj-0123456789abcdefWXYZ", "sk-proj-…WXYZ"},
		{"0123456789abcdefghij", "…ghij"},
	}
	for _, tt := range tests {
		if got := maskSecret(tt.secret); got != tt.want {
			t.Errorf("maskSecret(%q) = %q, want %q", tt.secret, got, tt.want)
		}
	}
	// Short secrets must not be shown even in part.
	// Short secrets must not be shown even in part: a digest stands in.
	for _, s := range []string{"sk-abc", "sk-abcdefgh", "xyz", "abcdefghijk"} {
		got := maskSecret(s)
		tail := strings.TrimPrefix(s, "sk-")
		if strings.Contains(got, tail) || !strings.Contains(got, "…#") {
			t.Errorf("maskSecret(%q) = %q shows the secret", s, got)
		}
	}
	if maskSecret("sk-a") == maskSecret("sk-b") {
		t.Error("two short secrets got the same mask")
	}
}

func TestNewRejectsBadKeys(t *testing.T) {
	const secret = "sk-secretsecretsecret1234"
	tests := []struct {
		name string
		keys []Key
		want string // in the error
	}{
		{"no keys", nil, "no keys"},
		{"empty secret", []Key{{Secret: ""}}, "key #0 ((empty secret)): Secret is empty"},
		{"newline in secret", []Key{{Secret: secret + "\n"}}, "white space"},
		{"duplicate", []Key{{Secret: secret}, {Secret: "sk-other"}, {Secret: secret}}, "key #2 (sk-…1234): Secret duplicates key #0"},
		{"negative weight", []Key{{Secret: secret, Weight: -1}}, "Weight is -1"},
		{"NaN weight", []Key{{Secret: secret, Weight: math.NaN()}}, "Weight is NaN"},
		{"Inf weight", []Key{{Secret: secret, Weight: math.Inf(1)}}, "Weight is +Inf"},
		{"negative RPM", []Key{{Secret: secret, RPM: -5}}, "RPM is -5"},
		{"negative TPM", []Key{{Secret: secret, TPM: -5}}, "TPM is -5"},
		{"negative MaxConcurrent", []Key{{Secret: secret, MaxConcurrent: -1}}, "MaxConcurrent is -1"},
		{"bad BaseURL scheme", []Key{{Secret: secret, BaseURL: "ftp://x"}}, "scheme must be http or https"},
		{"BaseURL without host", []Key{{Secret: secret, BaseURL: "https://"}}, "no host"},
		{"BaseURL unparsable", []Key{{Secret: secret, BaseURL: "http://[::1"}}, "cannot parse"},
		{"BaseURL with user", []Key{{Secret: secret, BaseURL: "https://u:p@h"}}, "credentials belong in Secret"},
		{"empty model", []Key{{Secret: secret, Models: []string{"a", " "}}}, "empty name"},
		{"empty mapped model", []Key{{Secret: secret, ModelMap: map[string]string{"": "b"}}}, "ModelMap has an empty name"},
		{"empty model mapped to", []Key{{Secret: secret, ModelMap: map[string]string{"a": ""}}}, `ModelMap["a"] has an empty name`},
		{"spaced model mapped to", []Key{{Secret: secret, ModelMap: map[string]string{"a": "b "}}}, `ModelMap["a"] has "b " with white space`},
		{"unknown auth", []Key{{Secret: secret, Auth: AuthXAPIKey + 1}}, "Auth is AuthStyle(4)"},
		{"bad header", []Key{{Secret: secret, Header: "X Key"}}, `Header "X Key" is not a header name`},
		{"framing header", []Key{{Secret: secret, Header: "content-length"}}, `Header "content-length" carries the request itself`},
		{"duplicate name", []Key{{Secret: secret, Name: "a"}, {Secret: "sk-2", Name: "a"}}, `Name "a" is already used by key #0`},
		{"account limits differ", []Key{
			{Secret: secret, Account: "acme", RPM: 60},
			{Secret: "sk-2", Account: "acme"},
			{Secret: "sk-3", Account: "acme", RPM: 30},
		}, `Account "acme": RPM 30 differs from 60 declared by key #0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.keys)
			if err == nil {
				t.Fatal("New accepted bad keys")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "secretsecret") {
				t.Errorf("error %q shows a secret", err)
			}
			if len(tt.keys) > 0 && !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v is not ErrInvalidConfig", err)
			}
		})
	}
}

func TestKeyNeverPrintsSecret(t *testing.T) {
	k := Key{Secret: "sk-verysecretvalue9876", RPM: 3}
	for _, s := range []string{k.String(), fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k), fmt.Sprint([]Key{k})} {
		if strings.Contains(s, "verysecret") {
			t.Errorf("printed key shows its secret: %s", s)
		}
	}
}

func TestDefaultsAndAccounts(t *testing.T) {
	p, err := New([]Key{
		{Secret: "sk-aaaaaaaaaaaaaaaa1111", Account: "acme", MaxConcurrent: 7},
		{Secret: "sk-bbbbbbbbbbbbbbbb1111", Account: "acme"},
		{Secret: "sk-cccccccccccccccc2222", Name: "c"},
	})
	if err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if st[0].Name != "sk-…1111" || st[1].Name != "sk-…1111(2)" || st[2].Name != "c" {
		t.Errorf("names: %q %q %q", st[0].Name, st[1].Name, st[2].Name)
	}
	// c has no MaxConcurrent: its limit is learned, from 1.
	if st[0].Limit != 7 || st[1].Limit != 7 || st[2].Limit != 1 {
		t.Errorf("limits: %d %d %d", st[0].Limit, st[1].Limit, st[2].Limit)
	}
	s := p.snap.Load()
	if s.keys[0].account != s.keys[1].account || s.keys[0].account == s.keys[2].account {
		t.Error("keys of one account do not share its state")
	}
	if s.keys[0].cfg.Weight != 1 {
		t.Errorf("default weight %v", s.keys[0].cfg.Weight)
	}
}

func TestManyKeysWithOneMaskGetNumberedNames(t *testing.T) {
	keys := make([]Key, 3000)
	for i := range keys {
		keys[i] = Key{Secret: fmt.Sprintf("sk-%06d-0123456789abcdef", i)}
	}
	keys[5].Name = "sk-…cdef(7)" // an explicit name that a number would take
	p, err := New(keys)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, st := range p.Stats() {
		if seen[st.Name] {
			t.Fatalf("name %q given twice", st.Name)
		}
		seen[st.Name] = true
	}
	if !seen["sk-…cdef"] || !seen["sk-…cdef(2)"] || !seen["sk-…cdef(3000)"] {
		t.Errorf("names not numbered 2..n")
	}
}

// New's error for a BaseURL with a query does not show the query: a
// Gemini-style "?key=<secret>" holds the key's own secret.
func TestBaseURLErrorHidesTheQuery(t *testing.T) {
	const secret = "AIzaSyAbcdefghijklmnopqrstuvwxyz0123456"
	_, err := New([]Key{{Secret: secret, BaseURL: "https://generativelanguage.googleapis.com/v1beta/openai?key=" + secret}})
	if err == nil {
		t.Fatal("want an error")
	}
	if strings.Contains(err.Error(), secret[8:]) {
		t.Errorf("New's error shows the secret: %v", err)
	}
}
