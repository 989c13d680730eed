package keypool

import (
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
