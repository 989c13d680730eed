package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults, documented in the package comment.
const (
	defaultAddr            = "127.0.0.1:8787"
	defaultShutdownTimeout = 30 * time.Second
	defaultMaxBodyBytes    = 32 << 20 // keypool's own WithMaxBodyBytes default
)

// Connection limits. They are not settings: they only need to be above
// what an honest client takes, and below what lets a slow one pin the
// proxy. Tests shorten them through config.
const (
	headerTimeout  = 10 * time.Second // to send the request line and headers
	bodyTimeout    = 60 * time.Second // to send the whole request, body included
	idleTimeout    = 90 * time.Second // for a kept-alive connection between requests
	maxHeaderBytes = 64 << 10
)

// config is everything the command is told, checked.
type config struct {
	keys      keySource
	upstream  *url.URL // nil when unset; then every key must have a BaseURL
	addr      string
	adminAddr string // "" serves /metrics on addr
	tokens    []string

	shutdownTimeout time.Duration
	maxBodyBytes    int64
	redis           *redis.Options // nil without KEYPOOL_REDIS_URL; may hold a password
	logFormat       string         // "text" or "json"
	check           bool

	headerTimeout, bodyTimeout, idleTimeout time.Duration
	// upstreamTransport, when set, replaces the connections to the
	// upstream; benchmarks put a stub here.
	upstreamTransport http.RoundTripper
}

// setting is one option, read from a flag or else from the environment.
type setting struct {
	env, flag, usage string
}

var settings = []setting{
	{"KEYPOOL_KEYS", "keys", "the key list, in keypool.ParseKeys syntax (prefer the environment or a file: flags show in ps)"},
	{"KEYPOOL_KEYS_FILE", "keys-file", "a file holding the key list; SIGHUP reloads it"},
	{"KEYPOOL_UPSTREAM", "upstream", "base URL for keys without base=, e.g. https://api.deepseek.com"},
	{"KEYPOOL_ADDR", "addr", "listen address (default " + defaultAddr + ")"},
	{"KEYPOOL_ADMIN_ADDR", "admin-addr", "listen address for /metrics and /healthz (default: the main address)"},
	{"KEYPOOL_TOKENS", "tokens", "comma-separated tokens clients must send as Authorization: Bearer; required unless the address is loopback"},
	{"KEYPOOL_SHUTDOWN_TIMEOUT", "shutdown-timeout", "how long SIGTERM waits for requests in flight, e.g. 30s (default 30s)"},
	{"KEYPOOL_MAX_BODY_BYTES", "max-body-bytes", "largest request body accepted, in bytes (default 33554432, 32 MiB)"},
	{"KEYPOOL_REDIS_URL", "redis-url", "a Redis URL, redis://[:password@]host:port[/db]: replicas that share it share their limits"},
	{"KEYPOOL_LOG_FORMAT", "log-format", "text or json (default text)"},
}

// lookup gives a setting's value and the name it came by: the flag when
// given (even empty), else the environment variable.
type lookup func(env string) (value, from string)

// loadConfig reads the configuration from args and the environment,
// flags winning; a nil getenv reads the process's environment. It checks
// everything but the key list, which checkKeys checks once loaded.
// Errors never quote a secret.
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	processEnv := getenv == nil
	if processEnv {
		getenv = os.Getenv
	}
	get, flagKeys, check, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return config{}, err
	}
	cfg := config{
		check:         check,
		headerTimeout: headerTimeout,
		bodyTimeout:   bodyTimeout,
		idleTimeout:   idleTimeout,
	}
	if cfg.keys, err = keySourceFrom(get, flagKeys, processEnv); err != nil {
		return config{}, err
	}
	for _, read := range []func(*config, lookup) error{readAddrs, readTokens, readLimits, readStore, readLogFormat} {
		if err := read(&cfg, get); err != nil {
			return config{}, err
		}
	}
	return cfg, nil
}

// parseFlags parses args and returns the lookup of every setting, whether
// a key flag was given, and -check.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (get lookup, flagKeys, check bool, err error) {
	fs := flag.NewFlagSet("keypool", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: keypool [flags]\n\n"+
			"An OpenAI-compatible proxy that spreads requests over a pool of API keys.\n"+
			"Every flag has an environment variable of the same name: -keys-file is KEYPOOL_KEYS_FILE.\n"+
			"Flags win over the environment.\n\n")
		fs.PrintDefaults()
	}
	// Flag defaults stay empty: -h prints them, and the environment may
	// hold secrets.
	values := make(map[string]*string, len(settings))
	for _, s := range settings {
		values[s.flag] = fs.String(s.flag, "", s.usage)
	}
	checkFlag := fs.Bool("check", false, "validate the configuration, print a summary without secrets, and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, false, false, err
		}
		return nil, false, false, fmt.Errorf("%w: %v", errUsage, err) // flag has printed it
	}
	if fs.NArg() > 0 {
		return nil, false, false, fmt.Errorf("unexpected argument %s; configuration comes from flags and KEYPOOL_* variables", shown(fs.Arg(0)))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	get = func(env string) (string, string) {
		for _, s := range settings {
			if s.env == env && given[s.flag] {
				return *values[s.flag], "-" + s.flag
			}
		}
		return getenv(env), env
	}
	return get, given["keys"] || given["keys-file"], *checkFlag, nil
}

// readAddrs reads the listen addresses.
func readAddrs(cfg *config, get lookup) (err error) {
	if cfg.upstream, err = parseUpstream(get("KEYPOOL_UPSTREAM")); err != nil {
		return err
	}
	if cfg.addr, err = parseAddr(get("KEYPOOL_ADDR")); err != nil {
		return err
	}
	if cfg.addr == "" {
		cfg.addr = defaultAddr
	}
	cfg.adminAddr, err = parseAddr(get("KEYPOOL_ADMIN_ADDR"))
	return err
}

// readTokens reads the client tokens, which only a loopback address may
// go without. It runs after readAddrs.
func readTokens(cfg *config, get lookup) (err error) {
	if cfg.tokens, err = parseTokens(get("KEYPOOL_TOKENS")); err != nil {
		return err
	}
	if len(cfg.tokens) == 0 && !isLoopback(cfg.addr) {
		return fmt.Errorf("KEYPOOL_TOKENS is empty and KEYPOOL_ADDR %s is not a loopback address: "+
			"anyone who can reach it could spend your keys; set KEYPOOL_TOKENS, or listen on 127.0.0.1", cfg.addr)
	}
	return nil
}

// readLimits reads the shutdown timeout and the body limit.
func readLimits(cfg *config, get lookup) (err error) {
	if cfg.shutdownTimeout, err = parseDuration(get("KEYPOOL_SHUTDOWN_TIMEOUT")); err != nil {
		return err
	}
	if cfg.shutdownTimeout == 0 {
		cfg.shutdownTimeout = defaultShutdownTimeout
	}
	if cfg.maxBodyBytes, err = parseSize(get("KEYPOOL_MAX_BODY_BYTES")); err != nil {
		return err
	}
	if cfg.maxBodyBytes == 0 {
		cfg.maxBodyBytes = defaultMaxBodyBytes
	}
	return nil
}

// readStore reads the Redis URL; newServer connects to it.
func readStore(cfg *config, get lookup) (err error) {
	cfg.redis, err = parseRedisURL(get("KEYPOOL_REDIS_URL"))
	return err
}

func readLogFormat(cfg *config, get lookup) error {
	switch format, from := get("KEYPOOL_LOG_FORMAT"); format {
	case "", "text":
		cfg.logFormat = "text"
	case "json":
		cfg.logFormat = "json"
	default:
		return fmt.Errorf("%s is %s; want text or json", from, shown(format))
	}
	return nil
}

// parseUpstream accepts an absolute http or https base URL without
// credentials, query or fragment. An unset upstream is allowed here;
// checkKeys requires it when some key has no BaseURL.
func parseUpstream(raw, from string) (*url.URL, error) {
	if raw == "" {
		return nil, nil
	}
	// The value is not repeated in errors: a key pasted into the wrong
	// variable must not be printed.
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s is not a URL", from)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%s: the scheme must be http or https, as in https://api.deepseek.com", from)
	case u.User != nil:
		return nil, fmt.Errorf("%s holds credentials (user@ or user:password@); put keys in KEYPOOL_KEYS", from)
	case u.Host == "":
		return nil, fmt.Errorf("%s has no host", from)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, fmt.Errorf("%s: a query or fragment is not allowed in the base URL", from)
	}
	return u, nil
}

func parseAddr(raw, from string) (string, error) {
	if raw == "" {
		return "", nil
	}
	if _, port, err := net.SplitHostPort(raw); err != nil || port == "" {
		return "", fmt.Errorf("%s is %s; want host:port, such as 127.0.0.1:8787", from, shown(raw))
	}
	return raw, nil
}

// isLoopback reports whether addr can only be reached from this machine:
// its host is localhost or a loopback IP. An empty host listens on every
// interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseTokens splits the client tokens. Its errors name a token by
// position only.
func parseTokens(raw, from string) ([]string, error) {
	var tokens []string
	for i, t := range strings.Split(raw, ",") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if strings.IndexFunc(t, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
			return nil, fmt.Errorf("%s: token #%d holds white space or control characters", from, i+1)
		}
		tokens = append(tokens, t)
	}
	return tokens, nil
}

// parseDuration accepts a Go duration ("45s", "2m") or whole seconds.
func parseDuration(raw, from string) (time.Duration, error) {
	if raw == "" {
		return 0, nil
	}
	if n, err := strconv.Atoi(raw); err == nil && n > 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(raw)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s is %s; want a positive duration such as 30s", from, shown(raw))
	}
	return d, nil
}

func parseSize(raw, from string) (int64, error) {
	if raw == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s is %s; want a positive number of bytes", from, shown(raw))
	}
	return n, nil
}

// shown quotes a bad value in an error, unless it is long enough to be a
// secret put in the wrong place.
func shown(s string) string {
	if len(s) > 16 {
		return fmt.Sprintf("(%d bytes, not shown)", len(s))
	}
	return strconv.Quote(s)
}

// settingError names the setting a library error is about, without the
// library's own "keypool: " prefix repeated inside the message.
type settingError struct {
	setting string
	err     error
}

func (e *settingError) Error() string {
	return e.setting + ": " + strings.TrimPrefix(e.err.Error(), "keypool: ")
}

func (e *settingError) Unwrap() error { return e.err }

// errUsage marks a command line that could not be parsed; flag has
// already said why.
var errUsage = errors.New("usage")
