package keypool

import (
	"fmt"
	"net/http"
	"strings"
)

// checkRequest refuses a request that net/http would refuse to send, as
// http.Transport does, so that the caller's mistake fails at once and is
// never taken for a key's failure: a missing URL or Header, a scheme
// other than http or https, no host, a bad method, or a header name or
// value that cannot go on the wire (a value ending in a new line read
// from a file, say).
func checkRequest(req *http.Request) error {
	switch {
	case req.URL == nil:
		return fmt.Errorf("%w: nil Request.URL", ErrInvalidRequest)
	case req.Header == nil:
		return fmt.Errorf("%w: nil Request.Header", ErrInvalidRequest)
	case req.URL.Scheme != "http" && req.URL.Scheme != "https":
		return fmt.Errorf("%w: unsupported protocol scheme %s (is the client's base URL missing its http:// or https://?)",
			ErrInvalidRequest, quoteShort(req.URL.Scheme))
	case req.URL.Host == "":
		return fmt.Errorf("%w: no host in the request URL", ErrInvalidRequest)
	case req.Method != "" && !isToken(req.Method):
		return fmt.Errorf("%w: invalid method %s", ErrInvalidRequest, quoteShort(req.Method))
	}
	for name, values := range req.Header {
		if !isToken(name) {
			return fmt.Errorf("%w: invalid header name %s", ErrInvalidRequest, quoteShort(name))
		}
		for _, v := range values {
			if !validHeaderValue(v) {
				// The value may be a credential: never show it.
				return fmt.Errorf("%w: header %s has a value holding a control character (a new line from a file?)",
					ErrInvalidRequest, quoteShort(name))
			}
		}
	}
	return nil
}

// isToken reports whether s is an HTTP token (RFC 9110 section 5.6.2),
// as header names and methods must be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || c <= ' ' || c == 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether v may be sent as a header value: no
// control characters other than horizontal tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// closeRequestBody closes the body of a request that is refused, as a
// RoundTripper must.
func closeRequestBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
