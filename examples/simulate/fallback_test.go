package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// With -outage A:..., every account of provider A answers 503 in the
// window. keypool with provider B as a lower tier serves every request,
// B serving only from the outage's start until A's keys are back, while
// keypool on A alone fails through the outage; the page shows B's share.
func TestProviderOutageFallsBackToB(t *testing.T) {
	inVirtualTime(t, testProviderOutageFallsBackToB)
}

func testProviderOutageFallsBackToB(t *testing.T) {
	htmlPath := filepath.Join(t.TempDir(), "sim.html")
	const start, end = time.Second, 2 * time.Second
	rep := runJSON(t, append(append([]string{}, quick...), "-duration", "4s", "-outage", "A:1s-2s", "-html", htmlPath)...)
	cfg := rep.Config
	if o := cfg.Outage; o == nil || o.Provider != "A" || o.Key != nil || o.Start != start || o.End != end {
		t.Fatalf("outage in the JSON config = %+v", o)
	}
	if cfg.Fallback == nil || cfg.Fallback.Model != fallbackModel || cfg.Fallback.capacity() < cfg.Rate {
		t.Fatalf("fallback in the JSON config = %+v, want B with room for %v req/s", cfg.Fallback, cfg.Rate)
	}
	if want := []string{scenarioSingle, scenarioNaive, scenarioKeypool, scenarioUnknown, scenarioFallback}; !slices.Equal(cfg.Scenarios, want) {
		t.Fatalf("scenarios %q, want %q", cfg.Scenarios, want)
	}
	byName := map[string]*result{}
	for _, r := range rep.Results {
		byName[r.Name] = r
		t.Logf("%-22s %5.1f%% of %d succeeded, %d served by B, %d upstream 503s", r.Name, 100*r.succeededShare(), r.Requests, r.ServedByB, r.Upstream5xx)
		if r.Upstream5xx == 0 {
			t.Errorf("%s: no 503s from the upstream: the outage missed the run", r.Name)
		}
		if r.Name != scenarioFallback && r.ServedByB != 0 {
			t.Errorf("%s: %d requests served by B, which only %q uses", r.Name, r.ServedByB, scenarioFallback)
		}
	}
	checkFallbackRow(t, byName[scenarioFallback], start, end)
	checkFailsThroughOutage(t, byName[scenarioKeypool], cfg)

	page, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatal(err)
	}
	// One label per chart, and one in the legend.
	if n := strings.Count(string(page), "outage of provider A"); n != len(rep.Results)+1 {
		t.Errorf(`"outage of provider A" appears %d times, want %d`, n, len(rep.Results)+1)
	}
	if !strings.Contains(string(page), `class="ok-b"`) || !strings.Contains(string(page), "succeeded on provider B") {
		t.Error("the page draws no successes on provider B, or its legend does not name them")
	}
}

// checkFallbackRow checks the fallback scenario: (measured: 100% over
// seeds 1 to 8) at least 99% succeeded; B's successes all finished
// between the outage's start and 2 s after its end (A's ejected keys are
// probed every second), and A served again after that.
func checkFallbackRow(t *testing.T, r *result, start, end time.Duration) {
	t.Helper()
	if r.succeededShare() < 0.99 {
		t.Errorf("%s: %.1f%% succeeded, want at least 99%%", r.Name, 100*r.succeededShare())
	}
	if r.ServedByB == 0 {
		t.Fatalf("%s: B served nothing during A's outage", r.Name)
	}
	var aAfter float64
	for _, b := range r.Timeline {
		from := b.T - binWidth.Seconds()
		if b.OKB > 0 && (from < start.Seconds() || b.T > (end+2*time.Second).Seconds()) {
			t.Errorf("%s: %v successes/s on B in the bin ending at %.2fs, outside [%v, %v]", r.Name, b.OKB, b.T, start, end+2*time.Second)
		}
		if from >= (end + 2*time.Second).Seconds() {
			aAfter += b.OK - b.OKB
		}
	}
	if aAfter == 0 {
		t.Errorf("%s: A served nothing from %v on: traffic did not go back", r.Name, end+2*time.Second)
	}
	var sharesB float64
	for _, s := range r.Shares {
		if strings.HasPrefix(s.Key, "B ") {
			sharesB += s.Share
		}
	}
	if sharesB == 0 {
		t.Errorf("%s: B's keys have no share of the successes: %v", r.Name, r.Shares)
	}
}

// checkFailsThroughOutage checks that r, on provider A alone, had no
// success and some failures in the outage, past the answers A admitted
// before it began.
func checkFailsThroughOutage(t *testing.T, r *result, cfg config) {
	t.Helper()
	o := cfg.Outage
	after := (o.Start + cfg.Latency + cfg.Jitter + 100*time.Millisecond).Seconds()
	var failed float64
	for _, b := range r.Timeline {
		if b.T-binWidth.Seconds() >= after && b.T <= o.End.Seconds() {
			failed += b.Failed
			if b.OK > 0 {
				t.Errorf("%s: %v successes/s in the bin ending at %.2fs, inside A's outage", r.Name, b.OK, b.T)
			}
		}
	}
	if failed == 0 {
		t.Errorf("%s: no failures inside A's outage", r.Name)
	}
}

// The fallback scenario's requests reach B in B's dialect: B's model
// name, the key in api-key, one of B's secrets; and the caller learns
// from the answer that B served it.
func TestFallbackSpeaksBsDialect(t *testing.T) {
	inVirtualTime(t, testFallbackSpeaksBsDialect)
}

func testFallbackSpeaksBsDialect(t *testing.T) {
	cfg := config{Keys: 2, Cap: 2, Rate: 10, Latency: 10 * time.Millisecond,
		Outage: &outage{Provider: providerA, Start: 0, End: time.Hour}}
	cfg.Fallback = newFallback(cfg)
	ps := startProviders(cfg)
	defer ps.close()
	client, err := fallbackClient(ps.env(cfg, func(func()) {}))
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		ok, byB := call(context.Background(), client, ps.a.url)
		if !ok || !byB {
			t.Fatalf("request %d: ok %v, served by B %v; want both", i, ok, byB)
		}
	}
	b := ps.b.sim.Total()
	if b.OK != n || b.Models[fallbackModel] != n || b.AuthHeaders["Api-Key"] != n || b.NotFound != 0 {
		t.Errorf("B saw %d OK, models %v, auth headers %v, %d not found; want %d of %s in Api-Key", b.OK, b.Models, b.AuthHeaders, b.NotFound, n, fallbackModel)
	}
	for _, s := range ps.a.secrets {
		if c := ps.b.sim.Counters(s); c.Requests != 0 {
			t.Errorf("B received A's key %d times", c.Requests)
		}
	}
	if a := ps.a.sim.Total(); a.Models[fallbackModel] != 0 || a.OK != 0 {
		t.Errorf("A, down, saw %d OK and models %v", a.OK, a.Models)
	}
}

func TestOutageSpecs(t *testing.T) {
	for _, c := range []struct {
		spec, want string // want: the outage's label, or a piece of the error
		ok         bool
	}{
		{"A:3s-8s", "provider A", true},
		{"2:3s-6s", "key 2", true},
		{"0:0s-1ms", "key 0", true},
		{"B:1s-2s", "provider B cannot fail: it is the fallback", false},
		{"a:1s-2s", `"a" is neither provider A nor a key 0..4`, false},
		{"5:1s-2s", "key 5 is not one of 0..4", false},
		{"99999999999999999999:1s-2s", "is not one of 0..4", false},
		{"A:2s-2s", "want 0 <= START < END", false},
		{"A:3s-1s", "want 0 <= START < END", false},
		{"A:3-8", "START and END are durations", false},
		{"A3s-8s", "want A:START-END (provider A) or KEY:START-END (one key)", false},
	} {
		o, err := parseOutage(c.spec, 5)
		switch {
		case c.ok && err != nil:
			t.Errorf("parseOutage(%q): %v", c.spec, err)
		case c.ok && o.label() != c.want:
			t.Errorf("parseOutage(%q) is an outage of %s, want %s", c.spec, o.label(), c.want)
		case !c.ok && (err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.spec)):
			t.Errorf("parseOutage(%q): err = %v, want one naming the spec and saying %q", c.spec, err, c.want)
		}
	}
}

// Only an outage of provider A brings in provider B.
func TestOnlyAProviderOutageAddsB(t *testing.T) {
	for _, c := range []struct {
		spec string
		b    bool
	}{{"", false}, {"2:3s-6s", false}, {"A:3s-8s", true}} {
		args := []string{"-progress=false"}
		if c.spec != "" {
			args = append(args, "-outage", c.spec)
		}
		cfg, _, err := parseFlags(args, new(bytes.Buffer))
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if (cfg.Fallback != nil) != c.b || slices.Contains(scenarioNames(scenarios(cfg)), scenarioFallback) != c.b {
			t.Errorf("%q: fallback %+v, scenarios %q; want B: %v", args, cfg.Fallback, scenarioNames(scenarios(cfg)), c.b)
		}
	}
}

func TestTableCountsWhatBServed(t *testing.T) {
	cfg := config{Keys: 2, Cap: 1, Rate: 10, Duration: time.Second, Deadline: time.Second, Latency: 100 * time.Millisecond, Requests: 10,
		Outage: &outage{Provider: providerA, Start: 0, End: time.Second}}
	cfg.Fallback = newFallback(cfg)
	results := []*result{
		{Name: scenarioKeypool, Requests: 10, Succeeded: 2, Failed: 8, Upstream5xx: 9,
			Shares: []keyShare{{"key 0", .5}, {"key 1", .5}, {"B key 0", 0}, {"B key 1", 0}}},
		{Name: scenarioFallback, Requests: 10, Succeeded: 10, ServedByB: 8, Upstream5xx: 7,
			Shares: []keyShare{{"key 0", .1}, {"key 1", .1}, {"B key 0", .4}, {"B key 1", .4}}},
	}
	var out bytes.Buffer
	writeTable(&out, cfg, results)
	table := out.String()
	for _, want := range []string{
		"succeeded  requests  failed  upstream 429s  upstream 503s  served by B",
		"keypool      20.0%        10       8              0              9            0",
		"keypool + fallback B     100.0%        10       0              0              7            8",
		"Outage: provider A answers 503 to every account from 0s to 1s.",
		"key 1  B key 0  B key 1", "40.0%", fallbackModel, "api-key",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	cfg.Outage, cfg.Fallback = &outage{Key: ptr(1), End: time.Second}, nil
	out.Reset()
	writeTable(&out, cfg, results[:1])
	if table := out.String(); strings.Contains(table, "served by B") || strings.Contains(table, "B key") {
		t.Errorf("a key's outage brings in no B, yet the table shows one:\n%s", table)
	}
}
