package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// writeTable prints the setup and what each scenario measured.
func writeTable(w io.Writer, cfg config, results []*result) {
	writeSetup(w, cfg)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := "scenario\tsucceeded\trequests\tfailed\tupstream 429s\t"
	if cfg.Outage != nil {
		header += "upstream 503s\t"
	}
	if cfg.Fallback != nil {
		header += "served by B\t"
	}
	fmt.Fprintln(tw, header+"p50\tp99\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%.1f%%\t%d\t%d\t%d\t", r.Name, 100*r.succeededShare(), r.Requests, r.Failed, r.Upstream429)
		if cfg.Outage != nil {
			fmt.Fprintf(tw, "%d\t", r.Upstream5xx)
		}
		if cfg.Fallback != nil {
			fmt.Fprintf(tw, "%d\t", r.ServedByB)
		}
		fmt.Fprintf(tw, "%s\t%s\t\n", ms(r.P50), ms(r.P99))
	}
	tw.Flush()
	fmt.Fprintln(w, "p50 and p99 are of successful requests, from arrival to the end of the answer.")
	if cfg.Fallback != nil {
		fmt.Fprintf(w, "served by B: requests that succeeded on provider B; only %q sends there.\n", scenarioFallback)
	}
	writeShares(w, cfg, results)
}

// writeShares prints each key's part of each scenario's successes.
func writeShares(w io.Writer, cfg config, results []*result) {
	fmt.Fprintln(w, "\nShare of successful requests per key:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := "scenario\t"
	for i := range cfg.Keys {
		header += fmt.Sprintf("key %d\t", i)
	}
	if fb := cfg.Fallback; fb != nil {
		for i := range fb.Keys {
			header += fmt.Sprintf("B key %d\t", i)
		}
	}
	fmt.Fprintln(tw, header)
	for _, r := range results {
		row := []string{r.Name}
		for _, s := range r.Shares {
			row = append(row, fmt.Sprintf("%.1f%%", 100*s.Share))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
}

// writeSetup describes the provider and the workload, which every
// scenario shares.
func writeSetup(w io.Writer, cfg config) {
	name := "Simulated DeepSeek"
	if cfg.Fallback != nil {
		name = "Provider A, a simulated DeepSeek"
	}
	fmt.Fprintf(w, "%s: %d accounts, each allows %d requests in flight and answers 429 over that (no Retry-After);\n",
		name, cfg.Keys, cfg.Cap)
	fmt.Fprintf(w, "latency %v + up to %v, so the keys' aggregate capacity is about %.0f req/s (%d slots / %v mean latency).\n",
		cfg.Latency, cfg.Jitter, cfg.capacity(), cfg.Keys*cfg.Cap, cfg.meanLatency())
	fmt.Fprintf(w, "Every scenario gets the same %d requests, arriving at random at %.0f/s (%.2f× capacity) for %v;\n",
		cfg.Requests, cfg.Rate, cfg.Rate/cfg.capacity(), cfg.Duration)
	fmt.Fprintf(w, "a request not answered within %v of arriving fails.\n", cfg.Deadline)
	writeOutage(w, cfg)
}

// writeOutage describes the outage, and provider B if it is A's.
func writeOutage(w io.Writer, cfg config) {
	o := cfg.Outage
	switch {
	case o == nil:
	case o.Key != nil:
		fmt.Fprintf(w, "Outage: key %d's account answers 503 from %v to %v; %q uses that key.\n", *o.Key, o.Start, o.End, scenarioSingle)
	default:
		fmt.Fprintf(w, "Outage: provider A answers 503 to every account from %v to %v.\n", o.Start, o.End)
	}
	if fb := cfg.Fallback; fb != nil {
		fmt.Fprintf(w, "Provider B, the fallback in %q only: %d accounts of %d requests in flight, latency %v + up to %v\n",
			scenarioFallback, fb.Keys, fb.Cap, fb.Latency, fb.Jitter)
		fmt.Fprintf(w, "(about %.0f req/s), its own model name (%s), the key in api-key; A's keys have priority 1, B's 0.\n",
			fb.capacity(), fb.Model)
	}
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond))
}

// writeJSON prints the configuration and the results.
func writeJSON(w io.Writer, cfg config, results []*result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Config  config    `json:"config"`
		Results []*result `json:"results"`
	}{cfg, results})
}
