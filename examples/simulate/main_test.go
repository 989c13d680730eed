package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/fakeupstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The simulators run in memory, so that the demo can run in virtual
	// time (see inVirtualTime): a socket would hold the bubble's clock.
	// Each gets a host of its own, which only its transport reaches, so
	// that keys' BaseURLs tell A from B as loopback ports do.
	startSimulator = func(name string, cfg fakeupstream.Config) (*fakeupstream.Server, string, http.RoundTripper) {
		sim := fakeupstream.NewInMemory(cfg)
		return sim, "http://provider-" + strings.ToLower(name) + ".invalid", sim.Client().Transport
	}
	goleak.VerifyTestMain(m)
}

// report is the -json output.
type report struct {
	Config  config    `json:"config"`
	Results []*result `json:"results"`
}

// quick is a small workload for tests: 3 keys of cap 4 at 120ms mean
// latency serve about 100 req/s, and requests arrive 1.1× as fast for a
// second.
var quick = []string{"-keys", "3", "-cap", "4", "-latency", "100ms", "-jitter", "40ms",
	"-duration", "1s", "-deadline", "800ms", "-progress=false"}

// runJSON runs the command with -json and decodes what it printed.
func runJSON(t *testing.T, args ...string) report {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(append(args, "-json"), &out, &errOut); err != nil {
		t.Fatalf("run(%q): %v\n%s", args, err, errOut.String())
	}
	var rep report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out.String())
	}
	if len(rep.Results) != len(rep.Config.Scenarios) || len(rep.Results) < len(scenarios(config{})) {
		t.Fatalf("%d results, want one per scenario (%v)", len(rep.Results), rep.Config.Scenarios)
	}
	return rep
}

func TestDemoRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-keys", "0"}, {"-cap", "-1"}, {"-rate", "-5"}, {"-duration", "0s"}, {"-deadline", "0s"},
		{"-latency", "-1s"}, {"-latency", "0s", "-jitter", "0s"},
		{"-outage", "9:1s-2s"}, {"-outage", "1:5s-2s"}, {"-outage", "x"}, {"-outage", "99999999999999999999:1s-2s"},
		{"-duration", "2s", "-outage", "1:2s-3s"}, // starts after the last arrival
		{"extra"},
	} {
		var out, errOut bytes.Buffer
		if err := run(append(args, "-progress=false"), &out, &errOut); err == nil {
			t.Errorf("run(%q) accepted bad flags", args)
		}
		if out.Len() > 0 {
			t.Errorf("run(%q) printed results: %s", args, out.String())
		}
	}
}

// The -html path is opened before the run, so a path that cannot be
// written fails at once instead of after the whole simulation.
func TestHTMLPathIsCheckedBeforeTheRun(t *testing.T) {
	inVirtualTime(t, testHTMLPathIsCheckedBeforeTheRun)
}

func testHTMLPathIsCheckedBeforeTheRun(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "no such dir", "sim.html")
	var out, errOut bytes.Buffer
	err := run(append(append([]string{}, quick...), "-progress=true", "-html", bad), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "-html") {
		t.Fatalf("run with -html %s: err = %v, want an -html error", bad, err)
	}
	// With -progress on and stderr not a terminal, each scenario that ran
	// would have written a line; the table comes only after the run.
	if out.Len() > 0 || errOut.Len() > 0 {
		t.Errorf("the run went ahead: stdout %q, stderr %q", out.String(), errOut.String())
	}
}

// A run that fails leaves no half-written page behind.
func TestHTMLFileIsRemovedWhenTheRunFails(t *testing.T) {
	inVirtualTime(t, testHTMLFileIsRemovedWhenTheRunFails)
}

func testHTMLFileIsRemovedWhenTheRunFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sim.html")
	var out, errOut bytes.Buffer
	// So few requests arrive that none does, which fails after the file
	// was created.
	err := run([]string{"-rate", "0.001", "-duration", "1ms", "-progress=false", "-html", path}, &out, &errOut)
	if err == nil {
		t.Fatal("run with no arrivals succeeded")
	}
	if _, statErr := os.Stat(path); !os.IsNotExist(statErr) {
		t.Errorf("%s left behind after %v (stat: %v)", path, err, statErr)
	}
}

// The README's demo section lists every flag, -progress included.
func TestReadmeListsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "## What the demo shows")
	if !ok {
		t.Fatal(`README has no "## What the demo shows" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var cfg config
	var out output
	var spec string
	newFlagSet(&cfg, &out, &spec).VisitAll(func(f *flag.Flag) {
		if !regexp.MustCompile("(^|[\\s(`])-" + f.Name + `\b`).MatchString(section) {
			t.Errorf("the README's demo section does not mention -%s", f.Name)
		}
	})
}
