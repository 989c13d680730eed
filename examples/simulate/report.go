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
	fmt.Fprintln(tw, header+"p50\tp99\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%.1f%%\t%d\t%d\t%d\t", r.Name, 100*r.succeededShare(), r.Requests, r.Failed, r.Upstream429)
		if cfg.Outage != nil {
			fmt.Fprintf(tw, "%d\t", r.Upstream5xx)
		}
		fmt.Fprintf(tw, "%s\t%s\t\n", ms(r.P50), ms(r.P99))
	}
	tw.Flush()
	fmt.Fprintln(w, "p50 and p99 are of successful requests, from arrival to the end of the answer.")

	fmt.Fprintln(w, "\nShare of successful requests per key:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header = "scenario\t"
	for i := range cfg.Keys {
		header += fmt.Sprintf("key %d\t", i)
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
	fmt.Fprintf(w, "Simulated DeepSeek: %d accounts, each allows %d requests in flight and answers 429 over that (no Retry-After);\n",
		cfg.Keys, cfg.Cap)
	fmt.Fprintf(w, "latency %v + up to %v, so the keys' aggregate capacity is about %.0f req/s (%d slots / %v mean latency).\n",
		cfg.Latency, cfg.Jitter, cfg.capacity(), cfg.Keys*cfg.Cap, cfg.meanLatency())
	fmt.Fprintf(w, "Every scenario gets the same %d requests, arriving at random at %.0f/s (%.2f× capacity) for %v;\n",
		cfg.Requests, cfg.Rate, cfg.Rate/cfg.capacity(), cfg.Duration)
	fmt.Fprintf(w, "a request not answered within %v of arriving fails.\n", cfg.Deadline)
	if o := cfg.Outage; o != nil {
		fmt.Fprintf(w, "Outage: key %d's account answers 503 from %v to %v; %q uses that key.\n", o.Key, o.Start, o.End, scenarioSingle)
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
