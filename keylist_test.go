package keypool

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseKeys(t *testing.T) {
	got, err := ParseKeys(`
# production keys
sk-aaaa0123456789abcdef;max=50, sk-bbbb0123456789abcdef; weight=2.5 ;account=team;rpm=60;tpm=90000
sk-cccc0123456789abcdef;models=deepseek-chat|deepseek-reasoner;name=c;base=https://api.deepseek.com
`)
	if err != nil {
		t.Fatal(err)
	}
	want := []Key{
		{Secret: "sk-aaaa0123456789abcdef", MaxConcurrent: 50},
		{Secret: "sk-bbbb0123456789abcdef", Weight: 2.5, Account: "team", RPM: 60, TPM: 90000},
		{Secret: "sk-cccc0123456789abcdef", Models: []string{"deepseek-chat", "deepseek-reasoner"}, Name: "c", BaseURL: "https://api.deepseek.com"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseKeys =\n%v\nwant\n%v", got, want)
	}
	if _, err := New(got); err != nil {
		t.Errorf("New rejects the parsed keys: %v", err)
	}
}

// The options of provider tiers: priority, model mappings and how the
// secret is sent.
func TestParseKeysTiers(t *testing.T) {
	got, err := ParseKeys(`sk-aaaa0123456789abcdef;priority=1
sk-or-bbbb0123456789abcdef;priority=-1;base=https://openrouter.ai/api;model:deepseek-chat=deepseek/deepseek-chat;MODEL:deepseek-reasoner = deepseek/deepseek-r1
azure0123456789abcdef;auth=Azure;model:gpt-4o=prod-gpt4o;base=https://x.openai.azure.com/openai/deployments/prod-gpt4o
goog0123456789abcdef;header=X-Goog-Api-Key;model:qwen:7b=qwen/qwen-7b=v2`)
	if err != nil {
		t.Fatal(err)
	}
	want := []Key{
		{Secret: "sk-aaaa0123456789abcdef", Priority: 1},
		{Secret: "sk-or-bbbb0123456789abcdef", Priority: -1, BaseURL: "https://openrouter.ai/api",
			ModelMap: map[string]string{"deepseek-chat": "deepseek/deepseek-chat", "deepseek-reasoner": "deepseek/deepseek-r1"}},
		{Secret: "azure0123456789abcdef", Auth: AuthAPIKey, ModelMap: map[string]string{"gpt-4o": "prod-gpt4o"},
			BaseURL: "https://x.openai.azure.com/openai/deployments/prod-gpt4o"},
		{Secret: "goog0123456789abcdef", Header: "X-Goog-Api-Key", ModelMap: map[string]string{"qwen:7b": "qwen/qwen-7b=v2"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseKeys =\n%v\nwant\n%v", got, want)
	}
	for i := range got {
		if got[i].Priority != want[i].Priority || got[i].Auth != want[i].Auth || got[i].Header != want[i].Header {
			t.Errorf("key %d: priority %d auth %v header %q", i, got[i].Priority, got[i].Auth, got[i].Header)
		}
	}
	if _, err := New(got); err != nil {
		t.Errorf("New rejects the parsed keys: %v", err)
	}
}

func TestParseKeysErrors(t *testing.T) {
	const secret = "sk-topsecret0123456789wxyz"
	tests := []struct{ list, want string }{
		{"", "no keys"},
		{" , \n# only a comment\n", "no keys"},
		{secret + ";wieght=2", `entry #1: (sk-…wxyz): unknown option "wieght"`},
		{"sk-a," + secret + ";rpm=lots", `entry #2: (sk-…wxyz): rpm="lots" is not a number`},
		{secret + ";max", `option 1 is not name=value`},
		{secret + ";sk-another0123456789", `option 1 is not name=value; separate keys with ','`},
		{secret + ";rpm=sk-another0123456789", `rpm=(20 bytes, not shown) is not a number`},
		{secret + " weight=2", "is a ';' missing?"},
		{";rpm=3", "no secret before the options"},
		{secret + ";priority=high", `priority="high" is not a number`},
		{secret + ";auth=basic", `auth="basic" is not one of bearer, api-key, x-api-key`},
		{secret + ";model:=b", `model:="b" names no model before the '='`},
		{secret + ";model:a=", `model:"a"= names no model after the '='`},
		{secret + ";model:a=b;model:a=c", `model:"a" is given twice`},
		{secret + ";auth=bearer;auth=api-key", "auth is given twice"},
	}
	for _, tt := range tests {
		_, err := ParseKeys(tt.list)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseKeys(%q) = %v, want an error saying %q", tt.list, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "topsecret") {
			t.Errorf("error shows the secret: %v", err)
		}
		if err != nil && !errors.Is(err, ErrInvalidConfig) && !errors.Is(err, ErrNoKeys) {
			t.Errorf("error %v is neither ErrInvalidConfig nor ErrNoKeys", err)
		}
	}
}

func FuzzParseKeys(f *testing.F) {
	f.Add("sk-aaaa0123456789abcdef;max=50, sk-bbbb0123456789abcdef;weight=2;account=t;models=a|b")
	f.Add("sk-x;base=http://[::1]:8080/v1;rpm=-1\n#c\nsk-y;name=;tpm=1e9")
	f.Add(";;,=;\n\x00sk-é;weight=NaN")
	f.Add("sk-x;priority=-3;model:a=b;model:c:d=e=f;auth=x-api-key;header=X-Key\nsk-y;auth=API-KEY;model:=")
	f.Fuzz(func(t *testing.T, list string) {
		keys, err := ParseKeys(list)
		check := func(err error) {
			for _, entry := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == '\n' }) {
				secret := strings.TrimSpace(strings.Split(entry, ";")[0])
				if len(secret) >= 16 && err != nil && strings.Contains(err.Error(), secret) {
					t.Fatalf("error shows a secret: %v", err)
				}
			}
		}
		check(err)
		if err == nil {
			_, err = New(keys)
			check(err)
		}
	})
}

// ParseKeys refuses options given where keys belong.
func TestParseKeysRefusesOptionsAsSecrets(t *testing.T) {
	for _, tc := range []struct{ list, want string }{
		{"sk-a0123456789abcdef,weight=2,rpm=60", `entry #2 looks like an option (weight=…); separate a key's options with ';'`},
		{"max=5", "entry #1 looks like an option"},
		{`sk-a0123456789abcdef;name=a;name=b`, "name is given twice"},
	} {
		_, err := ParseKeys(tc.list)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseKeys(%q) = %v, want an error containing %q", tc.list, err, tc.want)
		}
	}
	keys, err := ParseKeys(`sk-a0123456789abcdef;name="team a";account='acct'`)
	if err != nil || keys[0].Name != "team a" || keys[0].Account != "acct" {
		t.Errorf("quoted values: %+v, %v", keys, err)
	}
	// A secret that ends in '=' (base64 padding) is still a secret.
	keys, err = ParseKeys("c2VjcmV0c2VjcmV0c2VjcmV0==;max=2")
	if err != nil || keys[0].Secret != "c2VjcmV0c2VjcmV0c2VjcmV0==" {
		t.Errorf("padded secret: %+v, %v", keys, err)
	}
}

// What files and env files add to a key list (a byte-order mark, quotes
// around the list) never ends up in a secret that New accepts.
func TestParseKeysDropsFileArtefacts(t *testing.T) {
	const a, b = "sk-aaaaaaaaaaaaaaaaaaaaaaaa", "sk-bbbbbbbbbbbbbbbbbbbbbbbb"
	for name, list := range map[string]string{
		"byte-order mark": "\ufeff" + a + "\r\n" + b + "\r\n",
		"quoted list":     `"` + a + "," + b + `"`,
	} {
		keys, err := ParseKeys(list)
		if err != nil {
			continue // refusing the list is acceptable
		}
		for i, want := range []string{a, b} {
			if keys[i].Secret == want {
				continue
			}
			if _, err := New(keys); err == nil {
				t.Errorf("%s: ParseKeys gave secret #%d %q and New accepted it; it goes upstream as %q",
					name, i, keys[i].Secret, "Bearer "+keys[i].Secret)
			}
		}
	}
}

// models=a | b (spaces around the bar) serves models "a" and "b".
func TestParseKeysTrimsModels(t *testing.T) {
	keys, err := ParseKeys("sk-aaaaaaaaaaaaaaaaaaaaaaaa;models=deepseek-chat | deepseek-reasoner")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"deepseek-chat", "deepseek-reasoner"}; !reflect.DeepEqual(keys[0].Models, want) {
		t.Errorf("Models = %q, want %q", keys[0].Models, want)
	}
	p, _ := newFakeClockPool(t, keys)
	if _, err := acquireFor(p, context.Background(), &acquireRequest{model: "deepseek-reasoner"}); err != nil {
		t.Errorf("a deepseek-reasoner request: %v", err)
	}
}

// KeysFromEnv reads a variable, and its errors name it but never show
// its value.
func TestKeysFromEnv(t *testing.T) {
	const secret = "sk-env-0123456789abcdefwxyz"
	t.Setenv("KEYPOOL_TEST_KEYS", secret+";max=5, sk-env-0123456789abcdef2222")
	keys, err := KeysFromEnv("KEYPOOL_TEST_KEYS")
	if err != nil || len(keys) != 2 || keys[0].Secret != secret || keys[0].MaxConcurrent != 5 {
		t.Fatalf("KeysFromEnv = %v, %v", keys, err)
	}
	t.Setenv("KEYPOOL_TEST_BAD", secret+";rpm=lots")
	_, err = KeysFromEnv("KEYPOOL_TEST_BAD")
	if err == nil || !strings.Contains(err.Error(), "KEYPOOL_TEST_BAD") || strings.Contains(err.Error(), "0123456789abcdef") {
		t.Errorf("bad list: %v", err)
	}
	if _, err := KeysFromEnv("KEYPOOL_TEST_UNSET_VARIABLE"); !errors.Is(err, ErrNoKeys) || !strings.Contains(err.Error(), "KEYPOOL_TEST_UNSET_VARIABLE") {
		t.Errorf("unset variable: %v", err)
	}
}
