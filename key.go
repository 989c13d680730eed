package keypool

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Key describes one API key and the limits that apply to it.
//
// Zero values mean: Name is the masked secret, the key is its own account,
// requests go to the URL the client asked for, Weight is 1, every model is
// served, and there is no RPM, TPM or in-flight limit.
type Key struct {
	// Secret is the API key itself. It is sent only to the key's host and
	// never appears in errors, logs, Stats or String.
	Secret string
	// Name identifies the key in Stats and errors. It defaults to the
	// masked secret, such as "sk-…abcd".
	Name string
	// Account groups keys that share limits and billing: a 402 or an
	// exhausted quota disables every key of the account, a 429 cools the
	// whole account down, and RPM, TPM and MaxConcurrent apply to the
	// account as a whole. Keys of one account must not declare
	// different non-zero limits.
	Account string
	// BaseURL, when set, is where this key's requests go: its scheme and
	// host replace the request's, and its path is prepended to the
	// request's path ("https://openrouter.ai/api" turns
	// "/v1/chat/completions" into "/api/v1/chat/completions").
	BaseURL string
	// Weight is the key's share of traffic relative to the other keys.
	Weight float64
	// Models, when not empty, lists the only models this key serves, as
	// named in the request body's "model" field.
	Models []string
	// RPM limits requests per minute.
	RPM int
	// TPM limits tokens per minute, reserved from an estimate before each
	// request.
	TPM int
	// MaxConcurrent limits requests in flight; a streaming response holds
	// its slot until the caller closes its body.
	MaxConcurrent int

	// Priority ranks the key's provider: keys of a higher priority serve
	// first, and keys of one priority share traffic by weight. A lower
	// priority gets a request only when no key of a higher one can serve
	// it (every one is disabled, ejected, cooling down, or does not serve
	// its model, or none frees up before the request's wait ends, or the
	// request failed there with a provider failure or was refused by every
	// one), or when the request has waited WithSpillAfter for one. A
	// request goes to a key it has not tried, on any tier, before one it
	// tried. Traffic goes
	// back up as soon as a key of the higher priority can serve. The
	// default, 0, is one tier for all.
	Priority int
	// ModelMap maps the model a caller asks for to this key's provider's
	// name for it, as {"deepseek-chat": "deepseek/deepseek-chat"}: the
	// "model" of a JSON request body is rewritten for attempts with this
	// key only, every other byte left as it was. A key with a ModelMap
	// serves the models it maps, and those of Models if any, and requests
	// that name no model (no body, or a form or file upload), as they
	// are. It never serves a request whose model it cannot rename: a
	// JSON body over WithMaxBodyBytes, or one whose top-level member is
	// spelled "Model" or the like.
	ModelMap map[string]string
	// Auth is how the secret is sent; AuthDefault uses the transport's
	// (WithAuth).
	Auth AuthStyle
	// Header, when set, is the name of the header that carries the secret
	// as it is, for a provider with a header of its own; it overrides
	// Auth.
	Header string
}

// String returns the key's name and limits, never its secret.
func (k Key) String() string {
	name := k.Name
	if name == "" {
		name = maskSecret(k.Secret)
	}
	return fmt.Sprintf("keypool.Key{%s weight=%g rpm=%d tpm=%d max=%d}", name, k.Weight, k.RPM, k.TPM, k.MaxConcurrent)
}

// GoString keeps %#v from printing the secret.
func (k Key) GoString() string { return k.String() }

// maskSecret returns a form of secret that is safe to show: its prefix up
// to the last dash among its first 8 bytes and its last 4 bytes, as in
// "sk-…abcd". A secret too short to hide anything that way is shown as
// its prefix and a short digest instead, so that two short keys still get
// different names.
func maskSecret(secret string) string {
	prefix := ""
	if i := strings.LastIndexByte(secret[:min(len(secret), 8)], '-'); i >= 0 {
		prefix = secret[:i+1]
	}
	if len(secret)-len(prefix) >= 12 {
		return prefix + "…" + secret[len(secret)-4:]
	}
	sum := sha256.Sum256([]byte(secret))
	return prefix + "…#" + hex.EncodeToString(sum[:2])
}

// validateKeys checks keys and returns them normalized: default names and
// weights filled in, and each account's limits gathered. Its errors name a
// key by its position and masked form, never by its secret.
func validateKeys(keys []Key) ([]Key, map[string]Limits, error) {
	if len(keys) == 0 {
		return nil, nil, ErrNoKeys
	}
	if err := checkNoSecretShown(keys); err != nil {
		return nil, nil, err
	}
	list := newKeyList(len(keys))
	out := make([]Key, len(keys))
	for i, k := range keys {
		if err := list.add(i, &k); err != nil {
			return nil, nil, &ConfigError{Index: i, Key: k.label(), Problem: err.Error()}
		}
		out[i] = k
	}
	return out, list.accounts, nil
}

// keyList checks keys one after the other against the ones before them:
// secrets and names must be unique, and the keys of an account must not
// declare different limits.
type keyList struct {
	secrets  map[string]int // secret → index
	names    map[string]int // name → index
	maskUses map[string]int // how many keys were numbered after a mask
	accounts map[string]Limits
	owners   map[string]int // account → index of the key that named it first
}

func newKeyList(n int) *keyList {
	return &keyList{
		secrets: make(map[string]int, n), names: make(map[string]int, n), maskUses: make(map[string]int),
		accounts: make(map[string]Limits), owners: make(map[string]int),
	}
}

// add checks k, the key at index i, and normalizes it in place.
func (l *keyList) add(i int, k *Key) error {
	if err := k.check(); err != nil {
		return err
	}
	if j, dup := l.secrets[k.Secret]; dup {
		return fmt.Errorf("Secret duplicates key #%d", j)
	}
	l.secrets[k.Secret] = i
	if k.Weight == 0 {
		k.Weight = 1
	}
	// The pool keeps its own copies: a caller's later changes to its maps
	// and slices must not reach requests in flight.
	k.ModelMap = maps.Clone(k.ModelMap)
	k.Models = slices.Clone(k.Models)
	if err := l.name(i, k); err != nil {
		return err
	}
	return l.joinAccount(i, k)
}

// name gives k its default name, the masked secret (numbered when keys
// share a mask), or checks that its own is not taken.
func (l *keyList) name(i int, k *Key) error {
	if k.Name != "" {
		if j, dup := l.names[k.Name]; dup {
			return fmt.Errorf("Name %q is already used by key #%d", k.Name, j)
		}
		l.names[k.Name] = i
		return nil
	}
	mask := maskSecret(k.Secret)
	k.Name = mask
	for {
		if _, taken := l.names[k.Name]; !taken {
			break
		}
		l.maskUses[mask]++
		k.Name = fmt.Sprintf("%s(%d)", mask, l.maskUses[mask]+1)
	}
	l.names[k.Name] = i
	return nil
}

// joinAccount gathers the limits of k's account.
func (l *keyList) joinAccount(i int, k *Key) error {
	if k.Account == "" {
		return nil
	}
	prev, seen := l.accounts[k.Account]
	merged, err := prev.merge(k.limits())
	if err != nil {
		return fmt.Errorf("Account %q: %v declared by key #%d", k.Account, err, l.owners[k.Account])
	}
	if !seen {
		l.owners[k.Account] = i
	}
	l.accounts[k.Account] = merged
	return nil
}

// check reports the first of the key's own fields that is wrong.
func (k Key) check() error {
	switch {
	case k.Secret == "":
		return errors.New("Secret is empty")
	case strings.IndexFunc(k.Secret, isSpaceOrControl) >= 0:
		return errors.New("Secret contains white space or control characters (a stray newline from a file or variable?)")
	case strings.ContainsAny(k.Secret, `"'`):
		return errors.New("Secret contains a quote (quotes kept from a file or variable?)")
	case strings.IndexFunc(k.Secret, notASCII) >= 0:
		return errors.New("Secret contains a character that is not ASCII (a byte-order mark from a file?)")
	case math.IsNaN(k.Weight) || math.IsInf(k.Weight, 0):
		return fmt.Errorf("Weight is %v; want a finite number", k.Weight)
	case k.Weight < 0:
		return fmt.Errorf("Weight is %g; want 0 (meaning 1) or more", k.Weight)
	}
	if err := k.limits().check(); err != nil {
		return err
	}
	if k.BaseURL != "" {
		if err := checkBaseURL(k.BaseURL); err != nil {
			return fmt.Errorf("BaseURL: %v", err)
		}
	}
	if err := k.checkModels(); err != nil {
		return err
	}
	return k.checkAuth()
}

// checkModels checks the names of Models and ModelMap.
func (k Key) checkModels() error {
	for _, m := range k.Models {
		if err := checkModelName(m); err != nil {
			return fmt.Errorf("Models %v", err)
		}
	}
	for from, to := range k.ModelMap {
		if err := checkModelName(from); err != nil {
			return fmt.Errorf("ModelMap %v", err)
		}
		if err := checkModelName(to); err != nil {
			return fmt.Errorf("ModelMap[%s] %v", quoteShort(from), err)
		}
	}
	return nil
}

// checkModelName refuses a model name that no request can carry.
func checkModelName(m string) error {
	switch {
	case strings.TrimSpace(m) == "":
		return errors.New("has an empty name")
	case strings.TrimSpace(m) != m:
		return fmt.Errorf("has %s with white space around it", quoteShort(m))
	}
	return nil
}

// headersNotForSecrets are headers that frame or route a request: a
// secret sent in one would break it.
var headersNotForSecrets = [...]string{"Host", "Content-Length", "Content-Type", "Content-Encoding",
	"Transfer-Encoding", "Connection", "Upgrade", "Te", "Trailer", "Keep-Alive", "Proxy-Connection"}

// checkAuth checks how the key's secret is sent.
func (k Key) checkAuth() error {
	if k.Auth < AuthDefault || k.Auth > AuthXAPIKey {
		return fmt.Errorf("Auth is %v; want AuthDefault, AuthBearer, AuthAPIKey or AuthXAPIKey", k.Auth)
	}
	if k.Header == "" {
		return nil
	}
	switch {
	case k.Header == k.Secret:
		return errors.New("Header is the secret; it names the header that carries it")
	case !isToken(k.Header):
		return fmt.Errorf("Header %s is not a header name", quoteShort(k.Header))
	}
	for _, h := range headersNotForSecrets {
		if strings.EqualFold(k.Header, h) {
			return fmt.Errorf("Header %q carries the request itself, not a secret", k.Header)
		}
	}
	return nil
}

// checkNoSecretShown refuses a Name or Account that is one of the keys'
// secrets: names and accounts are shown in Stats and errors, so a secret
// put there by mistake would be shown too.
func checkNoSecretShown(keys []Key) error {
	secrets := make(map[string]int, len(keys))
	for i, k := range keys {
		if _, dup := secrets[k.Secret]; !dup && k.Secret != "" {
			secrets[k.Secret] = i
		}
	}
	for i, k := range keys {
		for _, f := range [...]struct{ field, value string }{{"Name", k.Name}, {"Account", k.Account}} {
			if j, ok := secrets[f.value]; ok {
				return &ConfigError{Index: i, Key: maskSecret(k.Secret),
					Problem: fmt.Sprintf("%s is the secret of key #%d; it would be shown in Stats and errors", f.field, j)}
			}
		}
	}
	return nil
}

// label names a key in an error: its Name if set, else its masked secret.
func (k Key) label() string {
	if k.Name != "" {
		return k.Name
	}
	if k.Secret == "" {
		return "(empty secret)"
	}
	return maskSecret(k.Secret)
}

func notASCII(r rune) bool { return r > 0x7e }

func isSpaceOrControl(r rune) bool {
	return r <= ' ' || r == 0x7f || r == 0x85 || r == 0xa0 || r == 0x2028 || r == 0x2029
}

// checkBaseURL accepts an absolute http or https URL without credentials,
// query or fragment.
// Its errors show the URL without its query, fragment or user
// information, where a secret could be (Gemini's "?key=").
func checkBaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("cannot parse %s", quoteShort(raw))
	}
	shown := strconv.Quote((&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String())
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%s: scheme must be http or https", shown)
	case u.Host == "":
		return fmt.Errorf("%s: no host", shown)
	case u.User != nil:
		return fmt.Errorf("scheme://user@host form is not allowed; credentials belong in Secret")
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("%s: a query or fragment is not allowed (not shown: it may hold a secret)", shown)
	}
	return nil
}

// Limits are the limits of a key, or of the account its keys share; see
// Key for their meaning. 0 means no limit.
type Limits struct {
	RPM, TPM, MaxConcurrent int
}

// limits returns the key's limits.
func (k Key) limits() Limits {
	return Limits{RPM: k.RPM, TPM: k.TPM, MaxConcurrent: k.MaxConcurrent}
}

// setLimits sets the key's limits: the one place that knows which
// fields they are.
func (k *Key) setLimits(l Limits) {
	k.RPM, k.TPM, k.MaxConcurrent = l.RPM, l.TPM, l.MaxConcurrent
}

// check reports the first limit that is negative.
func (l Limits) check() error {
	switch {
	case l.RPM < 0:
		return fmt.Errorf("RPM is %d; want 0 (no limit) or more", l.RPM)
	case l.TPM < 0:
		return fmt.Errorf("TPM is %d; want 0 (no limit) or more", l.TPM)
	case l.MaxConcurrent < 0:
		return fmt.Errorf("MaxConcurrent is %d; want 0 (no limit) or more", l.MaxConcurrent)
	}
	return nil
}

// merge combines the limits declared by two keys of one account: a zero
// takes the other's value, two different non-zero values are an error.
func (a Limits) merge(b Limits) (Limits, error) {
	pick := func(field string, x, y int) (int, error) {
		if x != 0 && y != 0 && x != y {
			return 0, fmt.Errorf("%s %d differs from %d", field, y, x)
		}
		return max(x, y), nil
	}
	var err error
	var out Limits
	if out.RPM, err = pick("RPM", a.RPM, b.RPM); err != nil {
		return a, err
	}
	if out.TPM, err = pick("TPM", a.TPM, b.TPM); err != nil {
		return a, err
	}
	if out.MaxConcurrent, err = pick("MaxConcurrent", a.MaxConcurrent, b.MaxConcurrent); err != nil {
		return a, err
	}
	return out, nil
}
