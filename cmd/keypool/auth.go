package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// tokenSet checks the tokens clients send. It keeps only their SHA-256
// digests, and compares digests in constant time against every token,
// so neither a token's length nor which token matched shows in timing.
type tokenSet struct {
	digests [][sha256.Size]byte
}

func newTokenSet(tokens []string) *tokenSet {
	s := &tokenSet{digests: make([][sha256.Size]byte, len(tokens))}
	for i, t := range tokens {
		s.digests[i] = sha256.Sum256([]byte(t))
	}
	return s
}

// open reports whether no token is required: the proxy then listens on
// loopback only, as loadConfig made sure.
func (s *tokenSet) open() bool { return len(s.digests) == 0 }

// allows reports whether r carries a valid "Authorization: Bearer" token.
func (s *tokenSet) allows(r *http.Request) bool {
	token, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		return false
	}
	d := sha256.Sum256([]byte(token))
	match := 0
	for i := range s.digests {
		match |= subtle.ConstantTimeCompare(d[:], s.digests[i][:]) // no early exit
	}
	return match == 1
}

// bearer returns the token of an "Authorization: Bearer <token>" value;
// the scheme is case-insensitive.
func bearer(v string) (string, bool) {
	const scheme = "bearer "
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	return strings.TrimSpace(v[len(scheme):]), true
}

// requireToken lets through requests with a valid token, or all of them
// when no token is configured, and answers the others with OpenAI's 401.
func (s *tokenSet) requireToken(next http.Handler) http.Handler {
	if s.open() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.allows(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="keypool"`)
			writeAPIError(w, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key",
				"Missing or incorrect proxy token: send Authorization: Bearer <token> with one of the proxy's KEYPOOL_TOKENS.")
			return
		}
		next.ServeHTTP(w, r)
	})
}
