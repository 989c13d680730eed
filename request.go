package keypool

import (
	"fmt"
	"net/http"
	"strings"
)

// checkRequest refuses a request that cannot be sent anywhere, as
// http.Transport does, so that the caller's mistake fails at once and is
// never taken for a key's failure: a missing URL or Header, a scheme
// other than http or https, no host.
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
	}
	return nil
}

// checkRequestLine finds what else makes net/http refuse a request: a bad
// method, or a header name or value that cannot go on the wire (a value
// ending in a new line read from a file, say). It costs a pass over every
// header, so it runs only to explain an attempt that failed.
func checkRequestLine(req *http.Request) error {
	if req.Method != "" && !isToken(req.Method) {
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

// header returns the first value of the header with the canonical name
// key. Unlike http.Header.Get it does not canonicalize key, which costs
// on every request; net/http stores received headers canonically.
func header(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// encoded reports whether an answer's body has a content encoding that
// must be undone before its bytes can be read as text.
func encoded(h http.Header) bool {
	ce := header(h, "Content-Encoding")
	return ce != "" && ce != "identity"
}

// closeRequestBody closes the body of a request that is refused, as a
// RoundTripper must.
func closeRequestBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
