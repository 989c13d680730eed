package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// progress reports on stderr while scenarios run. On a terminal it
// redraws a bar in place with \r; anywhere else (a file, a pipe, CI logs)
// \r would leave a mess, so it writes one plain line per scenario.
type progress struct {
	w    io.Writer // nil: report nothing
	live bool      // w is a terminal: draw the bar

	name     string
	total    int
	start    time.Time
	ok, errs atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
}

// newProgress reports to w if enabled, with a bar if w is a terminal.
func newProgress(w io.Writer, enabled bool) *progress {
	if !enabled {
		return &progress{}
	}
	return &progress{w: w, live: isTerminal(w)}
}

// isTerminal reports whether w is a character device such as a terminal.
// (/dev/null is one too, which is harmless: nothing is shown there.)
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// begin starts reporting on a scenario of total requests.
func (p *progress) begin(name string, total int) {
	p.name, p.total, p.start = name, total, time.Now()
	p.ok.Store(0)
	p.errs.Store(0)
	if p.w == nil || !p.live {
		return
	}
	p.stop = make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.draw()
			case <-p.stop:
				p.draw()
				fmt.Fprintln(p.w)
				return
			}
		}
	}()
}

// tick counts a finished request.
func (p *progress) tick(ok bool) {
	if ok {
		p.ok.Add(1)
	} else {
		p.errs.Add(1)
	}
}

// end stops reporting on the scenario; r is its result, or nil if it
// failed.
func (p *progress) end(r *result) {
	if p.w == nil {
		return
	}
	if p.live {
		close(p.stop)
		p.wg.Wait()
		return
	}
	if r != nil {
		fmt.Fprintf(p.w, "%s: %.1f%% of %d requests succeeded (%.1fs)\n",
			p.name, 100*r.succeededShare(), r.Requests, time.Since(p.start).Seconds())
	}
}

func (p *progress) draw() {
	const width = 30
	ok, errs := p.ok.Load(), p.errs.Load()
	done := 0.0
	if p.total > 0 {
		done = min(float64(ok+errs)/float64(p.total), 1)
	}
	filled := int(done * width)
	fmt.Fprintf(p.w, "\r%-22s [%s%s] %3.0f%%  ok %-6d failed %-6d %5.1fs",
		p.name, strings.Repeat("#", filled), strings.Repeat(".", width-filled), done*100, ok, errs, time.Since(p.start).Seconds())
}
