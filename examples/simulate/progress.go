package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// progressBar draws one line on stderr while a scenario runs.
type progressBar struct {
	w        io.Writer // nil: draw nothing
	name     string
	total    int
	duration time.Duration
	start    time.Time
	ok, errs atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
}

func progressTo(w io.Writer, enabled bool) *progressBar {
	if !enabled {
		return &progressBar{}
	}
	return &progressBar{w: w}
}

func (b *progressBar) begin(name string, total int, duration time.Duration) {
	b.name, b.total, b.duration, b.start = name, total, duration, time.Now()
	b.ok.Store(0)
	b.errs.Store(0)
	if b.w == nil {
		return
	}
	b.stop = make(chan struct{})
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				b.draw()
			case <-b.stop:
				b.draw()
				fmt.Fprintln(b.w)
				return
			}
		}
	}()
}

func (b *progressBar) tick(ok bool) {
	if ok {
		b.ok.Add(1)
	} else {
		b.errs.Add(1)
	}
}

func (b *progressBar) end() {
	if b.w == nil {
		return
	}
	close(b.stop)
	b.wg.Wait()
}

func (b *progressBar) draw() {
	const width = 30
	ok, errs := b.ok.Load(), b.errs.Load()
	done := 0.0
	if b.total > 0 {
		done = float64(ok+errs) / float64(b.total)
	} else if b.duration > 0 {
		done = float64(time.Since(b.start)) / float64(b.duration)
	}
	done = min(max(done, 0), 1)
	filled := int(done * width)
	fmt.Fprintf(b.w, "\r%-18s [%s%s] %3.0f%%  ok %-6d errors %-6d %5.1fs",
		b.name, strings.Repeat("#", filled), strings.Repeat(".", width-filled), done*100, ok, errs, time.Since(b.start).Seconds())
}
