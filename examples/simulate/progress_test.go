package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIsTerminal(t *testing.T) {
	if isTerminal(&bytes.Buffer{}) {
		t.Error("a bytes.Buffer is a terminal?")
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Error("a regular file is a terminal?")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if isTerminal(w) {
		t.Error("a pipe is a terminal?")
	}
	// A character device, as a terminal is.
	if null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
		defer null.Close()
		if !isTerminal(null) {
			t.Errorf("%s, a character device, is not taken for a terminal", os.DevNull)
		}
	}
}

// With stderr not a terminal (here a buffer, as under CI or 2>log), the
// progress report is one plain line per scenario, with no \r.
func TestProgressIsPlainLinesWhenNotATerminal(t *testing.T) {
	inVirtualTime(t, testProgressIsPlainLinesWhenNotATerminal)
}

func testProgressIsPlainLinesWhenNotATerminal(t *testing.T) {
	var out, errOut bytes.Buffer
	args := []string{"-keys", "2", "-cap", "2", "-latency", "20ms", "-jitter", "0s", "-rate", "40",
		"-duration", "300ms", "-deadline", "200ms", "-progress=true"}
	if err := run(args, &out, &errOut); err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	got := errOut.String()
	if strings.Contains(got, "\r") {
		t.Errorf("progress wrote \\r to a non-terminal: %q", got)
	}
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != len(scenarios(config{})) {
		t.Fatalf("progress wrote %d lines, want one per scenario (%d): %q", len(lines), len(scenarios(config{})), got)
	}
	for i, sc := range scenarios(config{}) {
		if !strings.HasPrefix(lines[i], sc.name+": ") || !strings.Contains(lines[i], "% of ") {
			t.Errorf("line %d is %q, want %q's share that succeeded", i, lines[i], sc.name)
		}
	}

	errOut.Reset()
	if err := run(append(args, "-progress=false"), &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if errOut.Len() > 0 {
		t.Errorf("-progress=false wrote %q", errOut.String())
	}
}

// On a terminal the bar is redrawn in place.
func TestProgressBarOnATerminal(t *testing.T) {
	var w bytes.Buffer
	p := &progress{w: &w, live: true}
	p.begin("keypool", 4)
	p.tick(true)
	p.tick(false)
	p.end(&result{Name: "keypool", Requests: 4})
	got := w.String()
	if !strings.HasPrefix(got, "\rkeypool") || !strings.HasSuffix(got, "\n") || !strings.Contains(got, "ok 1") || !strings.Contains(got, "failed 1") {
		t.Errorf("bar = %q", got)
	}
}
