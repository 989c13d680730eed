package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// config is the simulated provider and the workload, the same for every
// scenario so that the scenarios compare over the same requests.
type config struct {
	Keys     int           `json:"keys"`            // one account each
	Cap      int           `json:"cap_per_account"` // requests in flight an account allows
	Rate     float64       `json:"rate_per_s"`      // requests arriving per second
	Duration time.Duration `json:"duration_ns"`     // how long requests arrive
	Deadline time.Duration `json:"deadline_ns"`     // a request's time to be answered, from arrival
	Latency  time.Duration `json:"latency_ns"`      // of an upstream answer
	Jitter   time.Duration `json:"jitter_ns"`       // random extra latency, up to this
	Outage   *outage       `json:"outage,omitempty"`
	// Fallback is provider B, set when the outage is provider A's: the
	// second tier of the fallback scenario.
	Fallback *fallback `json:"fallback,omitempty"`
	Seed     uint64    `json:"seed"` // of the arrivals and the simulators
	// Replicas, when more than 1, adds two scenarios: that many
	// replicas of keypool in one process, without a store and sharing
	// Redis (the one at Redis, or an embedded one).
	Replicas int    `json:"replicas,omitempty"`
	Redis    string `json:"redis,omitempty"`
	// Requests is how many requests arrive in each scenario's run.
	Requests int `json:"requests"`
	// Scenarios names the scenarios run, in order.
	Scenarios []string `json:"scenarios"`
}

// outage is a time window in which the simulated DeepSeek answers 503:
// to one key's account, or to every account (provider A as a whole).
type outage struct {
	// Provider is "A" when the whole provider fails.
	Provider string `json:"provider,omitempty"`
	// Key is the index of the key whose account fails, when only one
	// does; nil when Provider is set.
	Key   *int          `json:"key,omitempty"`
	Start time.Duration `json:"start_ns"` // from the start of a run
	End   time.Duration `json:"end_ns"`
}

// providerA is the name of the simulated DeepSeek in -outage and in the
// output, once a second provider is in the picture.
const providerA = "A"

// providerOutage reports whether the outage is provider A's, every
// account: the runs then add provider B and the fallback scenario.
func (c config) providerOutage() bool { return c.Outage != nil && c.Outage.Provider != "" }

// label names what fails, as the table and the chart say it.
func (o *outage) label() string {
	if o.Provider != "" {
		return "provider " + o.Provider
	}
	return fmt.Sprintf("key %d", *o.Key)
}

// meanLatency is what a request takes on average: the simulator adds a
// uniform random extra of up to Jitter.
func (c config) meanLatency() time.Duration { return c.Latency + c.Jitter/2 }

// capacity is the keys' aggregate capacity in requests per second: every
// slot of every account busy all the time.
func (c config) capacity() float64 {
	return float64(c.Keys*c.Cap) / c.meanLatency().Seconds()
}

// defaultLoad is the default arrival rate as a multiple of the capacity:
// a little more than the keys can serve, as in a burst of traffic, so
// that how each setup copes with the excess shows.
const defaultLoad = 1.1

// output is where and how the results go.
type output struct {
	json     bool
	html     string
	progress bool
}

// newFlagSet defines the command's flags into cfg and out.
func newFlagSet(cfg *config, out *output, outageSpec *string) *flag.FlagSet {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.IntVar(&cfg.Keys, "keys", 5, "number of keys, one account each")
	fs.IntVar(&cfg.Cap, "cap", 8, "requests in flight each account allows before it answers 429")
	fs.Float64Var(&cfg.Rate, "rate", 0, fmt.Sprintf("requests arriving per second, at random (0: %.1f× the keys' aggregate capacity)", defaultLoad))
	fs.DurationVar(&cfg.Duration, "duration", 8*time.Second, "how long requests keep arriving, in every scenario")
	fs.DurationVar(&cfg.Deadline, "deadline", 3*time.Second, "a request not answered this long after it arrived fails")
	fs.DurationVar(&cfg.Latency, "latency", 150*time.Millisecond, "upstream latency of a request")
	fs.DurationVar(&cfg.Jitter, "jitter", 50*time.Millisecond, "random extra latency, up to this")
	fs.IntVar(&cfg.Replicas, "replicas", 1, "also run this many replicas of keypool in one process, without a store and sharing Redis")
	fs.StringVar(&cfg.Redis, "redis", "", "the Redis the replicas share, as host:port (default: an embedded one)")
	fs.StringVar(outageSpec, "outage", "", "make provider A, or one key's account, answer 503 for a while: A:START-END or KEY:START-END, e.g. A:3s-8s or 2:3s-6s (A adds a scenario with provider B as the fallback)")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the arrivals and of the simulators' randomness")
	fs.BoolVar(&out.json, "json", false, "print the results as JSON instead of a table")
	fs.StringVar(&out.html, "html", "", "also write a self-contained page with a chart per scenario to this file")
	fs.BoolVar(&out.progress, "progress", true, "report progress on stderr: a bar on a terminal, else a line per scenario")
	return fs
}

// check reports the first value of the workload that cannot be used.
func (cfg config) check() error {
	switch {
	case cfg.Keys < 1:
		return fmt.Errorf("-keys %d: want at least 1", cfg.Keys)
	case cfg.Replicas < 1:
		return fmt.Errorf("-replicas %d: want at least 1", cfg.Replicas)
	case cfg.Cap < 1:
		return fmt.Errorf("-cap %d: want at least 1", cfg.Cap)
	case cfg.Rate < 0 || math.IsNaN(cfg.Rate) || math.IsInf(cfg.Rate, 0):
		return fmt.Errorf("-rate %v: want 0 (the default) or more", cfg.Rate)
	case cfg.Duration <= 0:
		return fmt.Errorf("-duration %v: want more than 0", cfg.Duration)
	case cfg.Deadline <= 0:
		return fmt.Errorf("-deadline %v: want more than 0", cfg.Deadline)
	case cfg.Latency < 0 || cfg.Jitter < 0:
		return errors.New("-latency and -jitter must not be negative")
	case cfg.meanLatency() <= 0 && cfg.Rate == 0:
		return errors.New("-latency 0 and -jitter 0 make the capacity infinite: give a -rate")
	}
	return nil
}

// parseFlags reads and checks the command line.
func parseFlags(args []string, stderr io.Writer) (config, output, error) {
	var cfg config
	var out output
	var outageSpec string
	fs := newFlagSet(&cfg, &out, &outageSpec)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return cfg, out, err
	}
	if fs.NArg() > 0 {
		return cfg, out, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := cfg.check(); err != nil {
		return cfg, out, err
	}
	if cfg.Rate == 0 {
		cfg.Rate = math.Round(defaultLoad * cfg.capacity())
	}
	if outageSpec != "" {
		o, err := parseOutage(outageSpec, cfg.Keys)
		if err != nil {
			return cfg, out, err
		}
		// Every scenario runs for Duration, so an outage that starts
		// within it shows in every scenario.
		if o.Start >= cfg.Duration {
			return cfg, out, fmt.Errorf("-outage %q starts after requests stop arriving (-duration %v)", outageSpec, cfg.Duration)
		}
		cfg.Outage = o
		if cfg.providerOutage() {
			cfg.Fallback = newFallback(cfg)
		}
	}
	return cfg, out, nil
}

var outagePattern = regexp.MustCompile(`^([^:]+):([^-]+)-(.+)$`)

// parseOutage reads A:START-END, provider A failing as a whole, or
// KEY:START-END, one key's account failing, such as A:3s-8s or 2:3s-6s.
func parseOutage(spec string, keys int) (*outage, error) {
	m := outagePattern.FindStringSubmatch(spec)
	if m == nil {
		return nil, fmt.Errorf("-outage %q: want A:START-END (provider A) or KEY:START-END (one key), such as A:3s-8s or 2:3s-6s", spec)
	}
	o := &outage{}
	if m[1] == providerA {
		o.Provider = providerA
	} else {
		k, err := parseOutageKey(m[1], keys)
		if err != nil {
			return nil, fmt.Errorf("-outage %q: %v", spec, err)
		}
		o.Key = &k
	}
	start, err1 := time.ParseDuration(m[2])
	end, err2 := time.ParseDuration(m[3])
	switch {
	case err1 != nil || err2 != nil:
		return nil, fmt.Errorf("-outage %q: START and END are durations, such as 3s", spec)
	case start < 0 || end <= start:
		return nil, fmt.Errorf("-outage %q: want 0 <= START < END", spec)
	}
	o.Start, o.End = start, end
	return o, nil
}

// parseOutageKey reads what fails when it is not provider A: a key's
// index.
func parseOutageKey(s string, keys int) (int, error) {
	k, err := strconv.Atoi(s)
	switch {
	case err == nil && k >= 0 && k < keys:
		return k, nil
	case err == nil || isDigits(s):
		return 0, fmt.Errorf("key %s is not one of 0..%d", s, keys-1)
	case s == "B":
		// B is the fallback the demo adds for an outage of A.
		return 0, fmt.Errorf("provider B cannot fail: it is the fallback the demo adds for an outage of A; want A or a key 0..%d", keys-1)
	}
	return 0, fmt.Errorf("%q is neither provider A nor a key 0..%d", s, keys-1)
}

// isDigits reports whether s is a non-empty run of decimal digits.
func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}
