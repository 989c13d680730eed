package fakeupstream

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// serve routes a request to its endpoint; any other gets a 404.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/chat/completions"):
		s.complete(w, r)
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/models"):
		s.listModels(w, r)
	default:
		writeError(w, apiError{http.StatusNotFound, "invalid_request_error", "not_found", "Unknown endpoint " + r.URL.Path}, nil)
	}
}

// complete answers a completion request: it reads it, decides its fate
// and writes the answer.
func (s *Server) complete(w http.ResponseWriter, r *http.Request) {
	c, ok := s.readCall(w, r)
	if !ok {
		return
	}
	d, release := s.admit(c)
	defer release() // no-op once called; the answers call it when complete
	if refuse(w, d) {
		return
	}
	s.answer(w, r, c, d, release)
}

// call is what the server reads of a completion request.
type call struct {
	secret string
	auth   string // the header that carried the secret
	model  string
	stream bool
	// prompt and completion are the tokens the request is billed.
	prompt, completion int
}

// chatRequest is the part of a chat completion request the server reads.
type chatRequest struct {
	Model     string `json:"model"`
	Stream    bool   `json:"stream"`
	MaxTokens *int   `json:"max_tokens"`
	MaxCompl  *int   `json:"max_completion_tokens"`
}

// defaultCompletion is how many tokens an answer has unless the request
// asks for fewer.
const defaultCompletion = 16

// completionTokens returns how many tokens the answer will have.
func (q chatRequest) completionTokens() int {
	switch {
	case q.MaxCompl != nil:
		return min(defaultCompletion, *q.MaxCompl)
	case q.MaxTokens != nil:
		return min(defaultCompletion, *q.MaxTokens)
	}
	return defaultCompletion
}

// readCall reads a request's body into a call, or answers 400 when it
// names no model (an Azure deployment counts as one); ok is false when
// the request has been dealt with.
func (s *Server) readCall(w http.ResponseWriter, r *http.Request) (c *call, ok bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, false
	}
	var req chatRequest
	err = json.Unmarshal(body, &req)
	if req.Model == "" {
		req.Model = azureDeployment(r.URL.Path)
	}
	if err != nil || req.Model == "" {
		writeError(w, apiError{http.StatusBadRequest, "invalid_request_error", "invalid_request", "Invalid request body: model is required"}, nil)
		return nil, false
	}
	secret, auth := secretOf(r)
	c = &call{
		secret:     secret,
		auth:       auth,
		model:      req.Model,
		stream:     req.Stream,
		prompt:     max(1, len(body)/4),
		completion: req.completionTokens(),
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
