package fakeupstream

import (
	"net/http"
	"time"
)

// Counters are what the server saw for one key.
type Counters struct {
	Requests     int // every completion request that named the key
	OK           int // 200s
	RateLimited  int // 429s for rate or concurrency, random ones and outages' included
	QuotaErrors  int // 429 insufficient_quota
	Unauthorized int // 401 and 403
	NoBalance    int // 402
	NotFound     int // 404s for a model not in Config.Models
	ServerErrors int // 5xx, including outages
	Resets       int // connections reset
	// RandomRateLimited counts the 429s drawn by Config.RateLimitRate,
	// which RateLimited counts too.
	RandomRateLimited int
	// Overloaded counts the 529s drawn by Config.OverloadedRate, which
	// ServerErrors counts too.
	Overloaded int
	// PromptTokens and CompletionTokens are what the server billed for
	// the key's successful requests.
	PromptTokens, CompletionTokens int
	// Busy is the total time the key's admitted requests held a slot of
	// their account, from admission until the answer was complete.
	Busy time.Duration
	// BodyMismatches counts requests whose body did not match their
	// X-Body-Sha256 header: a body replayed wrong.
	BodyMismatches int
	// Models counts the key's requests by the model they named (for an
	// Azure deployment whose body names none, the deployment).
	Models map[string]int
	// AuthHeaders counts the key's requests by the header that carried
	// the secret: "Authorization", "Api-Key" or "X-Api-Key".
	AuthHeaders map[string]int
	// ModelLists counts the GET /models requests that named the key;
	// they are not counted in Requests or any other field.
	ModelLists int
}

// add adds o's counts to c's.
func (c *Counters) add(o *Counters) {
	c.Requests += o.Requests
	c.OK += o.OK
	c.RateLimited += o.RateLimited
	c.RandomRateLimited += o.RandomRateLimited
	c.Overloaded += o.Overloaded
	c.QuotaErrors += o.QuotaErrors
	c.Unauthorized += o.Unauthorized
	c.NoBalance += o.NoBalance
	c.ServerErrors += o.ServerErrors
	c.Resets += o.Resets
	c.PromptTokens += o.PromptTokens
	c.CompletionTokens += o.CompletionTokens
	c.Busy += o.Busy
	c.BodyMismatches += o.BodyMismatches
	c.NotFound += o.NotFound
	c.ModelLists += o.ModelLists
	c.Models = addCounts(c.Models, o.Models)
	c.AuthHeaders = addCounts(c.AuthHeaders, o.AuthHeaders)
}

// addCounts adds src's counts to dst's, making dst if need be.
func addCounts(dst, src map[string]int) map[string]int {
	if len(src) == 0 {
		return dst
	}
	if dst == nil {
		dst = make(map[string]int, len(src))
	}
	for k, n := range src {
		dst[k] += n
	}
	return dst
}

// countRequest counts a completion request, by its model and the header
// of its secret.
func (c *Counters) countRequest(model, authHeader string) {
	c.Requests++
	if c.Models == nil {
		c.Models = map[string]int{}
	}
	c.Models[model]++
	if authHeader != "" {
		if c.AuthHeaders == nil {
			c.AuthHeaders = map[string]int{}
		}
		c.AuthHeaders[authHeader]++
	}
}

// Counters returns what the server saw for the key with that secret.
func (s *Server) Counters(secret string) Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	var c Counters
	if k := s.counts[secret]; k != nil {
		c.add(k)
	}
	return c
}

// Total returns the counters summed over every key.
func (s *Server) Total() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	var t Counters
	for _, c := range s.counts {
		t.add(c)
	}
	return t
}

// countStatus counts an error answer by its status.
func (c *Counters) countStatus(status int) {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		c.Unauthorized++
	case status == http.StatusPaymentRequired:
		c.NoBalance++
	case status == http.StatusNotFound:
		c.NotFound++
	case status == http.StatusTooManyRequests:
		c.RateLimited++
	case status >= 500:
		c.ServerErrors++
	}
}

func (s *Server) countsLocked(secret string) *Counters {
	c := s.counts[secret]
	if c == nil {
		c = &Counters{}
		s.counts[secret] = c
	}
	return c
}
