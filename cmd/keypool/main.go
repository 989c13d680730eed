// Command keypool is an OpenAI-compatible proxy that spreads the requests
// of services not written in Go over a pool of API keys, with keypool's
// Transport: weighted keys with per-key limits, failover on 429, 401, 402
// and 5xx, waiting in order for capacity, and streams never replayed. It
// is one process next to the service, with no database or dashboard.
//
//	KEYPOOL_KEYS='sk-a;max=50, sk-b;weight=2' KEYPOOL_UPSTREAM=https://api.deepseek.com \
//		go run github.com/keypool/keypool/cmd/keypool
//
// Clients then use http://127.0.0.1:8787/v1 as their base URL.
//
// # Configuration
//
// Each setting is an environment variable and a flag of the same name
// (KEYPOOL_KEYS_FILE is -keys-file); a flag wins over the variable.
//
//	KEYPOOL_KEYS              the key list in keypool.ParseKeys syntax
//	KEYPOOL_KEYS_FILE         a file holding it instead; SIGHUP reloads it
//	KEYPOOL_UPSTREAM          base URL for keys without base=, e.g. https://api.deepseek.com
//	KEYPOOL_ADDR              listen address; default 127.0.0.1:8787
//	KEYPOOL_TOKENS            comma-separated tokens clients send as Authorization: Bearer
//	KEYPOOL_ADMIN_ADDR        where /metrics (and /healthz) are served; default the main address
//	KEYPOOL_SHUTDOWN_TIMEOUT  how long SIGTERM waits for requests in flight; default 30s
//	KEYPOOL_MAX_BODY_BYTES    the largest request body; default 32 MiB
//	KEYPOOL_LOG_FORMAT        text (default) or json
//	KEYPOOL_REDIS_URL         redis://[:password@]host:port[/db]: replicas sharing it share limits
//
// -check validates the configuration, prints a summary without secrets
// and exits; it exits 1 with a message naming the problem otherwise.
//
// # Routes
//
// GET /healthz answers 200 while at least one key can serve (it is not
// disabled or ejected) and 503 with a JSON reason otherwise; its body
// counts the keys, those that can serve, and the requests in flight.
// GET /metrics serves the pool's metrics as package keypoolprom names
// them (keypool_upstream_requests_total, keypool_key_state, ...), with
// the Go runtime's and the process's, in the Prometheus format. Neither needs a token; set KEYPOOL_ADMIN_ADDR to keep /metrics
// off the main address. Every other path is proxied to the upstream with
// its query, after the client's token is checked.
//
// # Security
//
// Without KEYPOOL_TOKENS the proxy only starts on a loopback address.
// Tokens are compared in constant time. The client's Authorization,
// api-key, x-api-key, OpenAI-Organization and OpenAI-Project headers never
// reach the upstream. Requests go only to KEYPOOL_UPSTREAM or a key's own
// base URL, whatever their Host header or request URI says. Request
// bodies are limited in size and in time (60 s), headers to 64 KiB and
// 10 s; idle connections close after 90 s. Logs never hold a key, a
// client token, a query string or a header.
//
// # Replicas
//
// With KEYPOOL_REDIS_URL, the pool keeps its accounts' state in Redis
// (package redisstore): replicas of the proxy that share the Redis and
// the keys keep each account's limits together. The URL is read by
// redis.ParseURL; rediss:// is TLS. A Redis that is down or slow costs
// the shared limits, not requests: each replica keeps to its own limits
// until Redis answers again.
//
// # Logs
//
// Besides one line per request, the log says when a key changes state
// (disabled, cooling down, ejected, back in rotation) and why, as
// keypool.WithLogger writes it.
//
// # Signals
//
// SIGHUP reloads the key list: keys are added, removed and changed in
// the running pool, requests in flight keep their keys, and a list that
// does not parse or check is refused and the keys kept as they were.
// SIGTERM or SIGINT stops accepting connections, lets requests and
// streams in flight finish for up to KEYPOOL_SHUTDOWN_TIMEOUT, then
// exits 0; a second one stops waiting.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM, os.Interrupt)
	err := run(context.Background(), os.Args[1:], nil, os.Stdout, os.Stderr, signals)
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		os.Exit(2) // flag has printed the problem and the usage
	default:
		fmt.Fprintf(os.Stderr, "keypool: %v\n", err)
		os.Exit(1)
	}
}

// run is the whole command, with its inputs passed in so that tests run
// it in-process: it serves until ctx ends or signals delivers SIGTERM or
// SIGINT, and reloads the keys on each SIGHUP from signals. A nil getenv
// reads the process's environment.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, signals <-chan os.Signal) error {
	cfg, err := loadConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	keys, err := cfg.keys.load()
	if err != nil {
		return err
	}
	if cfg.check {
		names, err := checkKeys(&cfg, cfg.keys.from, keys)
		if err != nil {
			return err
		}
		printSummary(stdout, &cfg, names)
		return nil
	}
	s, err := newServer(cfg, keys, newLogger(cfg.logFormat, stderr))
	if err != nil {
		return err
	}
	if err := s.listen(); err != nil {
		s.closeStore()
		return err
	}
	return s.serve(ctx, signals)
}

func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

// printSummary says what -check found, naming keys by their masked form.
func printSummary(w io.Writer, cfg *config, names []string) {
	fmt.Fprintf(w, "configuration OK\n")
	fmt.Fprintf(w, "  keys:         %d from %s: %s\n", len(names), cfg.keys.from, strings.Join(names, ", "))
	if cfg.upstream != nil {
		fmt.Fprintf(w, "  upstream:     %s\n", cfg.upstream.Redacted())
	} else {
		fmt.Fprintf(w, "  upstream:     none; every key has its own base URL\n")
	}
	fmt.Fprintf(w, "  listen:       %s\n", cfg.addr)
	if cfg.adminAddr != "" {
		fmt.Fprintf(w, "  metrics:      %s/metrics\n", cfg.adminAddr)
	}
	if len(cfg.tokens) == 0 {
		fmt.Fprintf(w, "  client auth:  none (loopback only)\n")
	} else {
		fmt.Fprintf(w, "  client auth:  %d token(s)\n", len(cfg.tokens))
	}
	fmt.Fprintf(w, "  body limit:   %d bytes\n", cfg.maxBodyBytes)
	fmt.Fprintf(w, "  shutdown:     up to %v\n", cfg.shutdownTimeout)
	if cfg.redis != nil {
		// Addr and DB only: the options hold the password.
		fmt.Fprintf(w, "  shared state: Redis at %s, database %d\n", cfg.redis.Addr, cfg.redis.DB)
	} else {
		fmt.Fprintf(w, "  shared state: none; limits are this process's own\n")
	}
}
