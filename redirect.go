package keypool

import (
	"net/http"
	"net/url"
	"strings"
)

// originURL is the URL of the first request of a redirect chain.
func originURL(req *http.Request) *url.URL {
	for req.Response != nil && req.Response.Request != nil && req.Response.Request != req {
		req = req.Response.Request
	}
	return req.URL
}

// mayFollow reports whether a secret whose home is home may go to dest:
// the same host, and the same scheme or an upgrade from http to https.
// A secret meant for https never goes over plain http.
func mayFollow(home, dest *url.URL) bool {
	if !strings.EqualFold(home.Hostname(), dest.Hostname()) {
		return false
	}
	switch {
	case home.Scheme == dest.Scheme:
		return effectivePort(home) == effectivePort(dest)
	case home.Scheme == "http" && dest.Scheme == "https":
		return dest.Port() == "" || dest.Port() == "443" || dest.Port() == home.Port()
	}
	return false
}

// effectivePort is u's port, or its scheme's default when it names none.
func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// rebase sends u to base: base's scheme and host, base's path before
// u's. Both paths keep their escaping ("team%2Fa" stays one segment).
func rebase(u, base *url.URL) *url.URL {
	out := *u
	out.Scheme, out.Host, out.User = base.Scheme, base.Host, nil
	if prefix := strings.TrimSuffix(base.Path, "/"); prefix != "" {
		out.Path = prefix + u.Path
		out.RawPath = ""
		if base.RawPath != "" || u.RawPath != "" {
			out.RawPath = strings.TrimSuffix(base.EscapedPath(), "/") + u.EscapedPath()
		}
	}
	return &out
}
