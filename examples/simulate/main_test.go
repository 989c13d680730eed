package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestDemoFiguresAreConsistent(t *testing.T) {
	htmlPath := filepath.Join(t.TempDir(), "sim.html")
	var out, errOut bytes.Buffer
	args := []string{"-requests", "400", "-callers", "30", "-cap", "4", "-latency", "20ms", "-jitter", "5ms",
		"-json", "-progress=false", "-html", htmlPath}
	if err := run(args, &out, &errOut); err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	var report struct {
		Results []result `json:"results"`
	}
	if err := json.Unmarshal(out.Bytes(), &report); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out.String())
	}
	if len(report.Results) != 4 {
		t.Fatalf("%d results, want 4", len(report.Results))
	}
	byName := map[string]result{}
	for _, r := range report.Results {
		byName[r.Name] = r
		if r.Requests != 400 || r.Succeeded+r.Errors != r.Requests {
			t.Errorf("%s: %d requests = %d succeeded + %d errors?", r.Name, r.Requests, r.Succeeded, r.Errors)
		}
		if r.UpstreamReq < r.Requests {
			t.Errorf("%s: upstream saw %d requests, fewer than the callers' %d", r.Name, r.UpstreamReq, r.Requests)
		}
		sum := 0.0
		for _, s := range r.Shares {
			sum += s.Share
		}
		if r.Succeeded > 0 && math.Abs(sum-1) > 1e-9 {
			t.Errorf("%s: key shares add up to %v", r.Name, sum)
		}
		var ok, errs float64
		for _, b := range r.Timeline {
			ok += b.OK * binWidth.Seconds()
			errs += b.Errors * binWidth.Seconds()
		}
		if int(math.Round(ok)) != r.Succeeded || int(math.Round(errs)) != r.Errors {
			t.Errorf("%s: timeline sums to %.0f ok, %.0f errors; table says %d, %d", r.Name, ok, errs, r.Succeeded, r.Errors)
		}
	}
	single, kp, learned := byName[scenarioSingle], byName[scenarioKeypool], byName[scenarioUnknown]
	if kp.Errors != 0 || learned.Errors != 0 {
		t.Errorf("keypool: %d and %d (caps unknown) caller-visible errors, want 0", kp.Errors, learned.Errors)
	}
	if learned.Upstream429*10 > learned.Requests {
		t.Errorf("caps unknown: %d upstream 429s for %d requests, want under 10%%", learned.Upstream429, learned.Requests)
	}
	if single.Upstream429 < 100 || kp.Upstream429*10 > single.Upstream429 {
		t.Errorf("upstream 429s: keypool %d, one key %d; want keypool's far below", kp.Upstream429, single.Upstream429)
	}
	for _, s := range kp.Shares {
		if math.Abs(s.Share-0.2) > 0.05 {
			t.Errorf("keypool: %s has %.1f%% of successes, want about 20%%", s.Key, 100*s.Share)
		}
	}

	page, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatal(err)
	}
	svgs := regexp.MustCompile(`(?s)<svg .*?</svg>`).FindAll(page, -1)
	if len(svgs) != 4 {
		t.Fatalf("page has %d charts, want 4", len(svgs))
	}
	for _, svg := range svgs {
		if err := xml.Unmarshal(svg, new(struct{})); err != nil {
			t.Errorf("chart is not well-formed SVG: %v", err)
		}
	}
}

func TestDemoTableAndOutage(t *testing.T) {
	var out, errOut bytes.Buffer
	args := []string{"-requests", "200", "-callers", "10", "-keys", "3", "-cap", "4", "-latency", "10ms", "-jitter", "0s",
		"-outage", "1:0s-10s"}
	if err := run(args, &out, &errOut); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, want := range []string{"scenario", "one key", "naive round robin", "keypool", "caps unknown", "upstream 429s", "p99", "key 1 answers 503 from 0s to 10s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(errOut.String(), "[###") {
		t.Errorf("no progress bar on stderr: %q", errOut.String())
	}
	// keypool still serves every request with one account down.
	line := regexp.MustCompile(`(?m)^\s*keypool\s+(\d+)\s+(\d+)\s+(\d+)`).FindStringSubmatch(out.String())
	if line == nil || line[1] != "200" || line[2] != "200" || line[3] != "0" {
		t.Errorf("keypool row %q, want 200 requests, 200 succeeded, 0 errors", line)
	}
}

func TestDemoRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-keys", "0"}, {"-cap", "-1"}, {"-outage", "9:1s-2s"}, {"-outage", "1:5s-2s"}, {"-outage", "x"},
		{"-requests", "0"}, {"extra"},
	} {
		var out, errOut bytes.Buffer
		if err := run(append(args, "-progress=false"), &out, &errOut); err == nil {
			t.Errorf("run(%q) accepted bad flags", args)
		}
	}
}
