package fakeupstream

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Server is a running simulated provider. Its URL serves
// POST {URL}/v1/chat/completions (any path ending in /chat/completions).
type Server struct {
	URL string

	srv    *httptest.Server
	start  time.Time
	client *http.Client

	mu       sync.Mutex // guards everything below
	cfg      Config
	rng      *rand.Rand
	accounts map[string]*accountState
	counts   map[string]*Counters // by secret
}

type accountState struct {
	limits      Account
	inflight    int
	maxInFlight int
	rpm, tpm    bucket
}

// Counters are what the server saw for one key.
type Counters struct {
	Requests     int // every request that named the key
	OK           int // 200s
	RateLimited  int // 429s for rate or concurrency
	QuotaErrors  int // 429 insufficient_quota
	Unauthorized int // 401 and 403
	NoBalance    int // 402
	ServerErrors int // 5xx, including outages
	Resets       int // connections reset
	// PromptTokens and CompletionTokens are what the server billed for
	// the key's successful requests.
	PromptTokens, CompletionTokens int
	// Busy is the total time the key's admitted requests held a slot of
	// their account, from admission until the answer was complete.
	Busy time.Duration
	// BodyMismatches counts requests whose body did not match their
	// X-Body-Sha256 header: a body replayed wrong.
	BodyMismatches int
}

// New starts a server on loopback. Close it when done.
func New(cfg Config) *Server {
	return start(cfg, false)
}

// NewInMemory starts a server on an in-memory network: its Client
// reaches it through pipes, never a socket. Tests that run in a
// testing/synctest bubble need it: there, time moves only while every
// goroutine waits on the bubble's channels and timers, and one reading a
// socket would keep it still. Close it when done.
func NewInMemory(cfg Config) *Server {
	return start(cfg, true)
}

func start(cfg Config, inMemory bool) *Server {
	s := &Server{
		cfg:      cfg,
		rng:      rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		accounts: make(map[string]*accountState),
		counts:   make(map[string]*Counters),
	}
	for name, a := range cfg.Accounts {
		s.accounts[name] = newAccountState(a)
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Config.ErrorLog = quietLog()
	if inMemory {
		pipes := newPipeListener()
		s.srv.Listener = pipes
		s.client = &http.Client{Transport: pipes.transport()}
	}
	s.start = time.Now() // before the first request can read it
	s.srv.Start()
	s.URL = s.srv.URL
	if s.client == nil {
		s.client = s.srv.Client()
	}
	return s
}

// Close shuts the server down, closing any connection still open.
func (s *Server) Close() {
	s.srv.CloseClientConnections()
	s.srv.Close()
	s.client.CloseIdleConnections()
}

// Client returns an http.Client that talks to the server (no redirects to
// elsewhere, no proxy).
func (s *Server) Client() *http.Client { return s.client }

// Counters returns what the server saw for the key with that secret.
func (s *Server) Counters(secret string) Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.counts[secret]; c != nil {
		return *c
	}
	return Counters{}
}

// Total returns the counters summed over every key.
func (s *Server) Total() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	var t Counters
	for _, c := range s.counts {
		t.Requests += c.Requests
		t.OK += c.OK
		t.RateLimited += c.RateLimited
		t.QuotaErrors += c.QuotaErrors
		t.Unauthorized += c.Unauthorized
		t.NoBalance += c.NoBalance
		t.ServerErrors += c.ServerErrors
		t.Resets += c.Resets
		t.PromptTokens += c.PromptTokens
		t.CompletionTokens += c.CompletionTokens
		t.Busy += c.Busy
		t.BodyMismatches += c.BodyMismatches
	}
	return t
}

// MaxInFlight returns the most requests the account had in flight at once.
func (s *Server) MaxInFlight(account string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.accounts[account]; a != nil {
		return a.maxInFlight
	}
	return 0
}

// InFlight returns how many requests the account has in flight now.
func (s *Server) InFlight(account string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.accounts[account]; a != nil {
		return a.inflight
	}
	return 0
}

// SetAccount changes an account's limits while the server runs, as a
// draining balance lowers DeepSeek's cap.
func (s *Server) SetAccount(name string, a Account) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.accountLocked(name)
	st.limits = a
	st.rpm.resize(a.RPM, time.Now())
	st.tpm.resize(a.TPM, time.Now())
}

// SetKey changes how a key is treated while the server runs.
func (s *Server) SetKey(secret string, k Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.Keys == nil {
		s.cfg.Keys = map[string]Key{}
	}
	keys := make(map[string]Key, len(s.cfg.Keys)+1) // the old map may be read by a handler
	for n, v := range s.cfg.Keys {
		keys[n] = v
	}
	keys[secret] = k
	s.cfg.Keys = keys
}

func (s *Server) accountLocked(name string) *accountState {
	a := s.accounts[name]
	if a == nil {
		a = newAccountState(Account{})
		s.accounts[name] = a
	}
	return a
}

func newAccountState(a Account) *accountState {
	now := time.Now()
	st := &accountState{limits: a}
	st.rpm.resize(a.RPM, now)
	st.tpm.resize(a.TPM, now)
	return st
}

// chatRequest is the part of a request the server reads.
type chatRequest struct {
	Model     string `json:"model"`
	Stream    bool   `json:"stream"`
	MaxTokens *int   `json:"max_tokens"`
	MaxCompl  *int   `json:"max_completion_tokens"`
}

func secretOf(r *http.Request) string {
	if v := r.Header.Get("Authorization"); strings.HasPrefix(v, "Bearer ") {
		return strings.TrimPrefix(v, "Bearer ")
	}
	if v := r.Header.Get("Api-Key"); v != "" {
		return v
	}
	return r.Header.Get("X-Api-Key")
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, "/chat/completions") || r.Method != http.MethodPost {
		writeError(w, http.StatusNotFound, "invalid_request_error", "not_found", "Unknown endpoint "+r.URL.Path, nil)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil || req.Model == "" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_request", "Invalid request body: model is required", nil)
		return
	}
	promptTokens := max(1, len(body)/4)
	completionTokens := 16
	if req.MaxCompl != nil {
		completionTokens = min(completionTokens, *req.MaxCompl)
	} else if req.MaxTokens != nil {
		completionTokens = min(completionTokens, *req.MaxTokens)
	}
	secret := secretOf(r)
	if want := r.Header.Get("X-Body-Sha256"); want != "" {
		if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != want {
			s.mu.Lock()
			s.countsLocked(secret).BodyMismatches++
			s.mu.Unlock()
		}
	}

	d, release := s.admit(secret, promptTokens+completionTokens)
	defer release() // no-op once called; the answers call it when complete
	switch d.kind {
	case admitReset:
		resetConnection(w)
		return
	case admitResetAfterHeaders:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"id":`)
		w.(http.Flusher).Flush()
		resetConnection(w)
		return
	case admitGarbage:
		w.WriteHeader(http.StatusBadGateway)
		w.Write(d.garbage)
		return
	case admitError:
		writeError(w, d.status, d.errType, d.code, d.message, d.header)
		return
	}
	for k, v := range d.header {
		w.Header()[k] = v
	}
	if d.key.Fault == FaultSlowHeaders && !sleepCtx(r, 300*time.Millisecond) {
		return
	}
	if req.Stream {
		if !s.stream(w, r, d.key, req.Model, promptTokens, completionTokens, release) {
			return
		}
	} else if d.key.EmptyAnswers {
		sleepCtx(r, d.latency)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "\n\n   \n")
		return
	} else {
		if !sleepCtx(r, d.latency) {
			return
		}
		// The answer is complete: the provider frees the slot before the
		// last bytes reach the client.
		release()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(completion(req.Model, promptTokens, completionTokens))
	}
	s.mu.Lock()
	c := s.countsLocked(secret)
	c.OK++
	c.PromptTokens += promptTokens
	c.CompletionTokens += completionTokens
	s.mu.Unlock()
}

type admitKind int

const (
	admitOK admitKind = iota
	admitError
	admitReset
	admitResetAfterHeaders
	admitGarbage
)

type decision struct {
	kind                   admitKind
	status                 int
	errType, code, message string
	header                 http.Header
	latency                time.Duration
	key                    Key
	garbage                []byte
}

// admit decides a request's fate under the lock and claims its in-flight
// slot; release gives the slot back.
func (s *Server) admit(secret string, tokens int) (decision, func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.countsLocked(secret)
	c.Requests++
	noop := func() {}
	key, known := s.cfg.Keys[secret]
	if !known || key.Fault == FaultRevoked {
		c.Unauthorized++
		return decision{kind: admitError, status: 401, errType: "invalid_request_error", code: "invalid_api_key",
			message: "Incorrect API key provided"}, noop
	}
	switch key.Fault {
	case FaultForbidden:
		c.Unauthorized++
		return decision{kind: admitError, status: 403, errType: "permission_error", code: "forbidden", message: "Forbidden"}, noop
	case FaultNoBalance:
		c.NoBalance++
		return decision{kind: admitError, status: 402, errType: "unknown_error", code: "invalid_request_error", message: "Insufficient Balance"}, noop
	case FaultRateLimited:
		c.RateLimited++
		return decision{kind: admitError, status: 429, errType: "requests", code: "rate_limit_exceeded",
			message: "Rate limit reached", header: http.Header{"Retry-After": {"1"}}}, noop
	case FaultServerError:
		c.ServerErrors++
		return decision{kind: admitError, status: 500, errType: "server_error", code: "internal_error", message: "internal error"}, noop
	case FaultGarbage:
		c.ServerErrors++
		garbage := make([]byte, 256<<10)
		for i := range garbage {
			garbage[i] = byte(s.rng.Uint32())
		}
		return decision{kind: admitGarbage, garbage: garbage}, noop
	case FaultResetAfterHeaders:
		c.Resets++
		return decision{kind: admitResetAfterHeaders}, noop
	case FaultQuota:
		c.QuotaErrors++
		return decision{kind: admitError, status: 429, errType: "insufficient_quota", code: "insufficient_quota",
			message: "You exceeded your current quota, please check your plan and billing details."}, noop
	}
	acctName := key.Account
	if acctName == "" {
		acctName = secret
	}
	since := time.Since(s.start)
	for _, o := range s.cfg.Outages {
		if o.Account == acctName && since >= o.Start && since < o.End {
			if o.Status == 0 {
				c.Resets++
				return decision{kind: admitReset}, noop
			}
			c.ServerErrors++
			return decision{kind: admitError, status: o.Status, errType: "server_error", code: "outage", message: "The server is temporarily unavailable"}, noop
		}
	}
	if s.cfg.ResetRate > 0 && s.rng.Float64() < s.cfg.ResetRate {
		c.Resets++
		return decision{kind: admitReset}, noop
	}
	if s.cfg.ErrorRate > 0 && s.rng.Float64() < s.cfg.ErrorRate {
		c.ServerErrors++
		return decision{kind: admitError, status: 500, errType: "server_error", code: "internal_error", message: "The server had an error while processing your request"}, noop
	}
	a := s.accountLocked(acctName)
	now := time.Now()
	if s.cfg.Mode == DeepSeek {
		if a.limits.MaxInFlight > 0 && a.inflight >= a.limits.MaxInFlight {
			c.RateLimited++
			return decision{kind: admitError, status: 429, errType: "rate_limit_reached_error", code: "rate_limit_reached",
				message: fmt.Sprintf("Rate limit reached: %d requests in flight", a.limits.MaxInFlight)}, noop
		}
	} else {
		h := http.Header{}
		okR, waitR := a.rpm.take(1, now)
		okT, waitT := true, time.Duration(0)
		if okR {
			okT, waitT = a.tpm.take(tokens, now)
			if !okT {
				a.rpm.give(1)
			}
		}
		a.rpm.headers(h, "requests", now)
		a.tpm.headers(h, "tokens", now)
		if !okR || !okT {
			c.RateLimited++
			wait := max(waitR, waitT)
			h.Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
			h.Set("Retry-After-Ms", strconv.FormatInt(wait.Milliseconds()+1, 10))
			return decision{kind: admitError, status: 429, errType: "requests", code: "rate_limit_exceeded",
				message: "Rate limit reached for requests", header: h}, noop
		}
		a.inflight++
		a.maxInFlight = max(a.maxInFlight, a.inflight)
		return decision{kind: admitOK, header: h, latency: s.latencyLocked(), key: key}, s.releaser(a, c)
	}
	a.inflight++
	a.maxInFlight = max(a.maxInFlight, a.inflight)
	return decision{kind: admitOK, latency: s.latencyLocked(), key: key}, s.releaser(a, c)
}

// releaser returns the function that frees an admitted request's slot
// and adds its time to the key's Busy; only its first call counts.
func (s *Server) releaser(a *accountState, c *Counters) func() {
	start := time.Now()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			a.inflight--
			c.Busy += time.Since(start)
			s.mu.Unlock()
		})
	}
}

func (s *Server) latencyLocked() time.Duration {
	d := s.cfg.Latency
	if s.cfg.Jitter > 0 {
		d += time.Duration(s.rng.Int64N(int64(s.cfg.Jitter)))
	}
	return d
}

func (s *Server) countsLocked(secret string) *Counters {
	c := s.counts[secret]
	if c == nil {
		c = &Counters{}
		s.counts[secret] = c
	}
	return c
}
