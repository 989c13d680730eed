package fakeupstream

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
)

// defaultModels is what GET /models lists when Config.Models is empty.
var defaultModels = []string{"deepseek-chat", "deepseek-reasoner", "gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"}

// unknownModelLocked refuses a request for a model the server does not
// know, when it knows a list of them.
func (s *Server) unknownModelLocked(model string, c *Counters) (decision, bool) {
	if len(s.cfg.Models) == 0 || slices.Contains(s.cfg.Models, model) {
		return decision{}, false
	}
	c.NotFound++
	return refusal(http.StatusNotFound, "invalid_request_error", "model_not_found",
		fmt.Sprintf("The model `%s` does not exist", model)), true
}

// listModels answers GET /models with the models the server knows, in
// Anthropic's shape when the request has an anthropic-version header. An
// unknown or revoked key gets a 401 and a forbidden one a 403; other
// faults do not stop a listing.
func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	var p protocol = openAIChat{}
	if r.Header.Get("Anthropic-Version") != "" {
		p = anthropicMessages{}
	}
	secret, _ := secretOf(r)
	s.mu.Lock()
	s.countsLocked(secret).ModelLists++
	key, known := s.cfg.Keys[secret]
	models := s.cfg.Models
	s.mu.Unlock()
	switch {
	case !known || key.Fault == FaultRevoked:
		p.writeError(w, apiError{http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "Incorrect API key provided"}, nil)
		return
	case key.Fault == FaultForbidden:
		p.writeError(w, apiError{http.StatusForbidden, "permission_error", "forbidden", "Forbidden"}, nil)
		return
	}
	if len(models) == 0 {
		models = defaultModels
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(p.modelList(models))
}
