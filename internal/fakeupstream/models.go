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

// listModels answers GET /models with the models the server knows. An
// unknown or revoked key gets a 401 and a forbidden one a 403; other
// faults do not stop a listing.
func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	secret, _ := secretOf(r)
	s.mu.Lock()
	s.countsLocked(secret).ModelLists++
	key, known := s.cfg.Keys[secret]
	models := s.cfg.Models
	s.mu.Unlock()
	switch {
	case !known || key.Fault == FaultRevoked:
		writeError(w, apiError{http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "Incorrect API key provided"}, nil)
		return
	case key.Fault == FaultForbidden:
		writeError(w, apiError{http.StatusForbidden, "permission_error", "forbidden", "Forbidden"}, nil)
		return
	}
	if len(models) == 0 {
		models = defaultModels
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(openAIModelList(models))
}

// openAIModelList is OpenAI's answer to GET /v1/models.
func openAIModelList(models []string) map[string]any {
	data := make([]map[string]any, len(models))
	for i, m := range models {
		data[i] = map[string]any{"id": m, "object": "model", "created": 1700000000, "owned_by": "fakeupstream"}
	}
	return map[string]any{"object": "list", "data": data}
}
