package fakeupstream

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"
)

// Server is a running simulated provider. Its URL serves the endpoints
// the package documentation lists: chat completions (Azure's included),
// Anthropic's Messages and the model list.
type Server struct {
	// URL is the server's base URL, such as http://127.0.0.1:port.
	URL string

	srv    *httptest.Server
	start  time.Time
	client *http.Client
	direct *inProcess // the in-memory server's transport

	mu       sync.Mutex // guards everything below
	cfg      Config
	rng      *rand.Rand
	accounts map[string]*accountState
	counts   map[string]*Counters // by secret
}

// accountState is what the server tracks of one account.
type accountState struct {
	limits      Account
	inflight    int
	maxInFlight int
	rpm, tpm    bucket
}

// New starts a server on loopback. Close it when done.
func New(cfg Config) *Server {
	return start(cfg, false)
}

// NewInMemory starts a server in memory: its Client hands each request
// straight to the simulator's handler, with no socket and no HTTP on the
// wire, and its URL is a placeholder that only that Client reaches. Tests
// that run in a testing/synctest bubble need it: there, time moves only
// while every goroutine waits on the bubble's channels and timers, and
// one reading a socket would keep it still. It is also far cheaper per
// request than loopback. Close it when done.
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
	s.start = time.Now() // before the first request can read it
	if inMemory {
		s.direct = &inProcess{handler: http.HandlerFunc(s.serve)}
		s.client = &http.Client{Transport: s.direct}
		s.URL = "http://fakeupstream.invalid"
		return s
	}
	s.srv.Start()
	s.URL = s.srv.URL
	s.client = s.srv.Client()
	return s
}

// Close shuts the server down, closing any connection still open and
// ending every request still being answered.
func (s *Server) Close() {
	if s.direct != nil {
		s.direct.close()
		return
	}
	s.srv.CloseClientConnections()
	s.srv.Close()
	s.client.CloseIdleConnections()
}

// Client returns an http.Client that talks to the server (no redirects to
// elsewhere, no proxy).
func (s *Server) Client() *http.Client { return s.client }

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

// accountOf names the account a key draws on: its own when it names none.
func accountOf(secret string, k Key) string {
	if k.Account == "" {
		return secret
	}
	return k.Account
}
