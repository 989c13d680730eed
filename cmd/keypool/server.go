package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keypool/keypool"
)

// server is the proxy: the pool, its listeners and their HTTP servers.
type server struct {
	cfg     config
	log     *slog.Logger
	pool    *keypool.Pool
	base    http.RoundTripper // the upstream connections keypool sends on
	keys    *liveKeys
	tokens  *tokenSet
	metrics *prometheus.Registry // what /metrics serves
	// closeStore closes the Redis store and its client, if any, once the
	// servers have stopped.
	closeStore func()

	main, admin     *http.Server // admin is nil without KEYPOOL_ADMIN_ADDR
	mainLn, adminLn net.Listener
	active          atomic.Int64 // handlers running
}

// newServer builds the proxy for a checked configuration and key list.
func newServer(cfg config, keys []keypool.Key, log *slog.Logger) (*server, error) {
	if _, err := checkKeys(&cfg, cfg.keys.from, keys); err != nil {
		return nil, err
	}
	opts, closeStore := openStore(cfg.redis)
	// The pool logs its keys' state changes (disabled, cooling, ejected,
	// back) with their causes: a proxy's operator has no other view of them.
	opts = append(opts, keypool.WithLogger(log))
	pool, err := keypool.New(keys, opts...)
	if err != nil {
		closeStore()
		return nil, &settingError{cfg.keys.from, err}
	}
	var names []string // as the pool calls the keys, for reloads
	for _, st := range pool.Stats() {
		names = append(names, st.Name)
	}
	s := &server{
		cfg:        cfg,
		log:        log,
		pool:       pool,
		base:       cfg.upstreamTransport,
		keys:       newLiveKeys(keys, names),
		tokens:     newTokenSet(cfg.tokens),
		metrics:    newMetrics(pool),
		closeStore: closeStore,
	}
	if s.base == nil {
		s.base = newUpstreamTransport()
	}
	rt := keypool.NewTransport(pool, keypool.WithBase(s.base), keypool.WithMaxBodyBytes(cfg.maxBodyBytes))
	proxy := proxyHandler(newProxy(cfg.upstream, rt, log, cfg.maxBodyBytes), cfg.maxBodyBytes)

	metrics := metricsHandler(s.metrics, log)
	mux := http.NewServeMux()
	mux.Handle("/healthz", healthHandler(pool))
	mux.Handle("/", s.tokens.requireToken(proxy))
	if cfg.adminAddr == "" {
		mux.Handle("/metrics", metrics)
	} else {
		admin := http.NewServeMux()
		admin.Handle("/metrics", metrics)
		admin.Handle("/healthz", healthHandler(pool))
		s.admin = s.httpServer(admin)
	}
	s.main = s.httpServer(mux)
	return s, nil
}

// newUpstreamTransport is http.DefaultTransport with room for the many
// connections to one host that a proxy keeps.
func newUpstreamTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	return t
}

// httpServer serves h with the connection limits, the access log and the
// count of running handlers that shutdown waits on.
func (s *server) httpServer(h http.Handler) *http.Server {
	logged := accessLog(s.log, h)
	return &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.active.Add(1)
			defer s.active.Add(-1)
			liftReadDeadline(w, r)
			logged.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: s.cfg.headerTimeout,
		ReadTimeout:       s.cfg.bodyTimeout, // lifted once the body is read: see slowclient.go
		IdleTimeout:       s.cfg.idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// No WriteTimeout: it would cut long streams.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// listen opens the listeners. Without client tokens the main one must be
// on loopback, whatever the address resolved to.
func (s *server) listen() error {
	ln, err := net.Listen("tcp", s.cfg.addr)
	if err != nil {
		return err
	}
	if a, ok := ln.Addr().(*net.TCPAddr); s.tokens.open() && (!ok || !a.IP.IsLoopback()) {
		ln.Close()
		return fmt.Errorf("KEYPOOL_TOKENS is empty and %s listens on %s, which is not loopback", s.cfg.addr, ln.Addr())
	}
	s.mainLn = ln
	if s.admin != nil {
		if s.adminLn, err = net.Listen("tcp", s.cfg.adminAddr); err != nil {
			s.mainLn.Close()
			return err
		}
	}
	return nil
}

// serve serves until ctx ends or a SIGTERM or SIGINT arrives, reloading
// the keys on each SIGHUP, then shuts down gracefully. It returns nil
// after a shutdown, even one that had to cut connections.
func (s *server) serve(ctx context.Context, signals <-chan os.Signal) error {
	type served struct {
		srv *http.Server
		ln  net.Listener
	}
	all := []served{{s.main, s.mainLn}}
	if s.admin != nil {
		all = append(all, served{s.admin, s.adminLn})
	}
	errc := make(chan error, len(all))
	for _, x := range all {
		go func() { errc <- x.srv.Serve(x.ln) }()
	}
	attrs := []any{"addr", s.mainLn.Addr().String(), "keys", len(s.keys.entries), "client_tokens", len(s.cfg.tokens)}
	if s.adminLn != nil {
		attrs = append(attrs, "admin_addr", s.adminLn.Addr().String())
	}
	if s.cfg.upstream != nil {
		attrs = append(attrs, "upstream", s.cfg.upstream.Redacted())
	}
	s.log.Info("listening", attrs...)

	var failed error
	running := len(all)
loop:
	for {
		select {
		case <-ctx.Done():
			s.log.Info("shutting down", "timeout", s.cfg.shutdownTimeout)
			break loop
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				s.logReload(s.reload())
				continue
			}
			s.log.Info("shutting down", "signal", sig.String(), "timeout", s.cfg.shutdownTimeout)
			break loop
		case err := <-errc:
			running--
			failed = fmt.Errorf("serving: %w", err)
			s.log.Error("server failed; shutting down", "err", err)
			break loop
		}
	}
	s.shutdown(signals)
	for ; running > 0; running-- {
		<-errc // http.ErrServerClosed
	}
	return failed
}

// shutdown stops accepting connections and waits for requests in flight,
// streams included, for up to the shutdown timeout; a second SIGTERM or
// SIGINT ends the wait early. Connections still open then are closed,
// which cancels their upstream requests.
func (s *server) shutdown(signals <-chan os.Signal) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.shutdownTimeout)
	defer cancel()
	stop := make(chan struct{})
	var watcher sync.WaitGroup
	watcher.Add(1)
	go func() {
		defer watcher.Done()
		for {
			select {
			case sig := <-signals:
				if sig != syscall.SIGHUP {
					s.log.Warn("second signal: closing connections now", "signal", sig.String())
					cancel()
					return
				}
			case <-stop:
				return
			}
		}
	}()
	servers := []*http.Server{s.main}
	if s.admin != nil {
		servers = append(servers, s.admin)
	}
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.Shutdown(ctx)
		}()
	}
	wg.Wait()
	close(stop)
	watcher.Wait()
	if ctx.Err() != nil {
		s.log.Warn("shutdown timeout: closing connections still open", "handlers", s.active.Load())
		for _, srv := range servers {
			srv.Close()
		}
		// Closed connections cancel their requests; their handlers end
		// as soon as keypool sees it.
		for deadline := time.Now().Add(5 * time.Second); s.active.Load() > 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if c, ok := s.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
	s.closeStore()
	s.log.Info("stopped")
}

// logReload logs the outcome of a reload. Its errors name keys by masked
// secret only.
func (s *server) logReload(res reloadResult, err error) {
	var partial *partialReloadError
	switch {
	case errors.As(err, &partial):
		s.log.Error("reload failed part way; the pool holds what was applied", "err", err)
	case err != nil:
		s.log.Error("reload refused; the keys stay as they were", "err", err)
	case res.added+res.removed+res.changed == 0:
		s.log.Info("reload: the key list is unchanged", "keys", res.keys)
	default:
		s.log.Info("keys reloaded", "keys", res.keys, "added", res.added, "removed", res.removed, "changed", res.changed)
	}
}
