// Command simulate shows what keypool changes, on a simulated DeepSeek
// with no API keys needed. Five accounts each cap requests in flight and
// answer any request over the cap with an immediate 429 (no
// Retry-After). The same requests arrive at the same moments, a little
// faster than the keys can serve them, and are sent four ways:
//
//  1. one key and a plain http.Client, the setup before;
//  2. naive multi-key: round robin over the keys with 3 immediate retries
//     and no limits, as a simple gateway does;
//  3. keypool with the same keys, told each account's cap;
//  4. keypool not told the caps, learning them from the 429s.
//
// -outage makes one key's account (KEY:START-END), or the whole
// provider, every account (A:START-END), answer 503 for a while. An
// outage of the provider adds a fifth way: keypool with a second
// simulated provider, B, as a lower tier (Key.Priority), with its own
// keys, its own name for the model (Key.ModelMap) and the key in an
// api-key header; the table counts the requests B served and the chart
// shows when it took over.
//
// Each request fails if it is not answered within its deadline. The
// table shows the share of requests that succeeded, what the upstream
// sent, and latencies; -json prints the figures, and -html writes a page
// with a chart of outcomes over time for each scenario.
//
//	go run ./examples/simulate
//	go run ./examples/simulate -outage 2:3s-6s -html sim.html
//	go run ./examples/simulate -outage A:3s-8s -html sim.html
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
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

func run(args []string, stdout, stderr io.Writer) (err error) {
	cfg, out, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	// The page's file is created before the run, so that a path that
	// cannot be written fails now rather than after the whole simulation.
	var page *os.File
	if out.html != "" {
		if page, err = os.Create(out.html); err != nil {
			return fmt.Errorf("-html: %w", err)
		}
		defer func() {
			if cerr := page.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("-html: %w", cerr)
			}
			if err != nil {
				os.Remove(out.html) // no half-written page
			}
		}()
	}

	ss := scenarios(cfg)
	cfg.Scenarios = scenarioNames(ss)
	arr := arrivals(cfg.Rate, cfg.Duration, cfg.Seed)
	if len(arr) == 0 {
		return fmt.Errorf("no request arrives in %v at %v/s: raise -rate or -duration", cfg.Duration, cfg.Rate)
	}
	cfg.Requests = len(arr)
	results, err := runAll(cfg, ss, arr, newProgress(stderr, out.progress))
	if err != nil {
		return err
	}

	if out.json {
		err = writeJSON(stdout, cfg, results)
	} else {
		writeTable(stdout, cfg, results)
	}
	if err != nil {
		return err
	}
	if page != nil {
		if err := writeHTML(page, cfg, results); err != nil {
			return fmt.Errorf("-html: %w", err)
		}
		if !out.json {
			fmt.Fprintf(stdout, "\nCharts written to %s\n", out.html)
		}
	}
	return nil
}

// runAll runs each scenario in turn on the same arrivals.
func runAll(cfg config, ss []scenario, arr []time.Duration, p *progress) ([]*result, error) {
	var results []*result
	for _, sc := range ss {
		r, err := runScenario(sc, cfg, arr, p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sc.name, err)
		}
		results = append(results, r)
	}
	return results, nil
}
