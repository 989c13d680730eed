// Command simulate shows what keypool changes, on a simulated DeepSeek
// with no API keys needed. It runs the same workload four ways against
// five accounts that each cap requests in flight and answer any request
// over the cap with an immediate 429 (no Retry-After):
//
//  1. one key and a plain http.Client, the setup before;
//  2. naive multi-key: round robin over the keys with 3 immediate retries
//     and no limits, as a simple gateway does;
//  3. keypool with the same keys, told each account's cap;
//  4. keypool not told the caps, learning them from the 429s.
//
// It prints a table of what callers saw and what the upstream sent, and
// can write the figures as JSON (-json) or a page with a chart (-html).
//
//	go run ./examples/simulate
//	go run ./examples/simulate -outage 2:3s-8s -html sim.html
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "simulate:", err)
		}
		os.Exit(2)
	}
}

// config is the workload and the simulated provider.
type config struct {
	Keys      int           `json:"keys"`
	Cap       int           `json:"cap_per_account"`
	Callers   int           `json:"callers"`
	Requests  int           `json:"requests"`
	Duration  time.Duration `json:"duration_ns"`
	Latency   time.Duration `json:"latency_ns"`
	Jitter    time.Duration `json:"jitter_ns"`
	Outage    *outage       `json:"outage,omitempty"`
	Seed      uint64        `json:"seed"`
	Scenarios []string      `json:"scenarios"`
}

// outage is one key's account failing with 503s for a time window.
type outage struct {
	Key        int           `json:"key"`
	Start, End time.Duration `json:"-"`
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	var outageSpec, htmlPath string
	var asJSON, progress bool
	fs.IntVar(&cfg.Keys, "keys", 5, "number of keys, one account each")
	fs.IntVar(&cfg.Cap, "cap", 8, "requests in flight each account allows before it answers 429")
	fs.IntVar(&cfg.Callers, "callers", 60, "concurrent callers, each sending requests back to back")
	fs.IntVar(&cfg.Requests, "requests", 2000, "requests per scenario (0: run for -duration)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "how long each scenario runs when -requests is 0")
	fs.DurationVar(&cfg.Latency, "latency", 150*time.Millisecond, "upstream latency of a request")
	fs.DurationVar(&cfg.Jitter, "jitter", 50*time.Millisecond, "random extra latency, up to this")
	fs.StringVar(&outageSpec, "outage", "", "make one key's account answer 503 for a while: KEY:START-END, e.g. 2:3s-8s")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the simulator's randomness")
	fs.BoolVar(&asJSON, "json", false, "print the results as JSON instead of a table")
	fs.StringVar(&htmlPath, "html", "", "also write a self-contained page with a chart to this file")
	fs.BoolVar(&progress, "progress", true, "show a progress bar on stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case cfg.Keys < 1:
		return fmt.Errorf("-keys %d: want at least 1", cfg.Keys)
	case cfg.Cap < 1:
		return fmt.Errorf("-cap %d: want at least 1", cfg.Cap)
	case cfg.Callers < 1:
		return fmt.Errorf("-callers %d: want at least 1", cfg.Callers)
	case cfg.Requests < 0:
		return fmt.Errorf("-requests %d: want 0 or more", cfg.Requests)
	case cfg.Requests == 0 && cfg.Duration <= 0:
		return errors.New("-requests 0 needs a -duration")
	case cfg.Latency < 0 || cfg.Jitter < 0:
		return errors.New("-latency and -jitter must not be negative")
	}
	if outageSpec != "" {
		o, err := parseOutage(outageSpec, cfg.Keys)
		if err != nil {
			return err
		}
		cfg.Outage = o
	}
	cfg.Scenarios = []string{scenarioSingle, scenarioNaive, scenarioKeypool, scenarioUnknown}

	var results []*result
	for _, name := range cfg.Scenarios {
		r, err := runScenario(name, cfg, progressTo(stderr, progress))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		results = append(results, r)
	}
	if asJSON {
		if err := writeJSON(stdout, cfg, results); err != nil {
			return err
		}
	} else {
		writeTable(stdout, cfg, results)
	}
	if htmlPath != "" {
		f, err := os.Create(htmlPath)
		if err != nil {
			return err
		}
		if err := writeHTML(f, cfg, results); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		if !asJSON {
			fmt.Fprintf(stdout, "\nChart written to %s\n", htmlPath)
		}
	}
	return nil
}

var outagePattern = regexp.MustCompile(`^(\d+):([^-]+)-(.+)$`)

// parseOutage reads KEY:START-END, such as 2:3s-8s.
func parseOutage(spec string, keys int) (*outage, error) {
	m := outagePattern.FindStringSubmatch(spec)
	if m == nil {
		return nil, fmt.Errorf("-outage %q: want KEY:START-END, such as 2:3s-8s", spec)
	}
	k, _ := strconv.Atoi(m[1])
	start, err1 := time.ParseDuration(m[2])
	end, err2 := time.ParseDuration(m[3])
	switch {
	case k < 0 || k >= keys:
		return nil, fmt.Errorf("-outage %q: key %d is not one of 0..%d", spec, k, keys-1)
	case err1 != nil || err2 != nil:
		return nil, fmt.Errorf("-outage %q: START and END are durations, such as 3s", spec)
	case start < 0 || end <= start:
		return nil, fmt.Errorf("-outage %q: want 0 <= START < END", spec)
	}
	return &outage{Key: k, Start: start, End: end}, nil
}
