package fakeupstream

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
)

// serve routes a request to its endpoint; any other gets a 404.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	post, path := r.Method == http.MethodPost, r.URL.Path
	switch {
	case post && strings.HasSuffix(path, "/chat/completions"):
		s.complete(w, r, openAIChat{})
	case post && strings.HasSuffix(path, "/v1/messages"):
		s.complete(w, r, anthropicMessages{})
	case r.Method == http.MethodGet && strings.HasSuffix(path, "/models"):
		s.listModels(w, r)
	default:
		openAIChat{}.writeError(w, apiError{http.StatusNotFound, "invalid_request_error", "not_found", "Unknown endpoint " + path}, nil)
	}
}

// complete answers a completion request in its protocol: it reads it,
// decides its fate and writes the answer.
func (s *Server) complete(w http.ResponseWriter, r *http.Request, p protocol) {
	c, ok := s.readCall(w, r, p)
	if !ok {
		return
	}
	d, release := s.admit(c)
	defer release() // no-op once called; the answers call it when complete
	if refuse(w, c, d) {
		return
	}
	s.answer(w, r, c, d, release)
}

// call is what the server reads of a completion request.
type call struct {
	proto  protocol
	secret string
	auth   string // the header that carried the secret
	model  string
	stream bool
	// prompt and completion are the tokens the request is billed.
	prompt, completion int
}

// readCall reads a request's body into a call, or answers 400 when its
// protocol finds it wrong; ok is false when the request has been dealt
// with.
func (s *Server) readCall(w http.ResponseWriter, r *http.Request, p protocol) (c *call, ok bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, false
	}
	req, bad := p.read(r, body)
	if bad != "" {
		p.writeError(w, apiError{http.StatusBadRequest, "invalid_request_error", "invalid_request", bad}, nil)
		return nil, false
	}
	secret, auth := secretOf(r)
	c = &call{
		proto:      p,
		secret:     secret,
		auth:       auth,
		model:      req.model,
		stream:     req.stream,
		prompt:     max(1, len(body)/4),
		completion: req.completion,
	}
	s.checkBody(r, c.secret, body)
	return c, true
}

// checkBody counts a body that does not match its X-Body-Sha256 header.
func (s *Server) checkBody(r *http.Request, secret string, body []byte) {
	want := r.Header.Get("X-Body-Sha256")
	if want == "" {
		return
	}
	if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != want {
		s.mu.Lock()
		s.countsLocked(secret).BodyMismatches++
		s.mu.Unlock()
	}
}

// secretOf returns the secret a request carries and the header that
// carries it: a bearer token, or an api-key (Azure) or x-api-key
// (Anthropic) header. Both are "" when there is none.
func secretOf(r *http.Request) (secret, header string) {
	if v := r.Header.Get("Authorization"); strings.HasPrefix(v, "Bearer ") {
		return strings.TrimPrefix(v, "Bearer "), "Authorization"
	}
	for _, h := range []string{"Api-Key", "X-Api-Key"} {
		if v := r.Header.Get(h); v != "" {
			return v, h
		}
	}
	return "", ""
}
