package keypool

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// Errors caused by a deadline are timeouts, as net/http's are.
func TestDeadlineErrorsAreTimeouts(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	tr, p, _ := newFakeClockTransport(t, []Key{{Secret: "sk-a", MaxConcurrent: 1}}, srv.Client().Transport, nil)
	proveAll(p)
	check := func(what string, err error) {
		t.Helper()
		var ne net.Error
		if !os.IsTimeout(err) || !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: err = %v (%T): os.IsTimeout %v, want a timeout wrapping context.DeadlineExceeded", what, err, err, os.IsTimeout(err))
		}
	}
	// Already expired: no attempt.
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader(chatBody))
	_, err := tr.RoundTrip(req)
	check("expired before the call", err)

	// Expires during the attempt.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	req, _ = http.NewRequestWithContext(ctx2, http.MethodPost, srv.URL, strings.NewReader(chatBody))
	_, err = tr.RoundTrip(req)
	check("expired during the attempt", err)

	// Expires while waiting for a key.
	go func() {
		resp, err := post(t, tr, srv.URL, chatBody)
		if err == nil {
			resp.Body.Close()
		}
	}()
	waitFor(t, func() bool { return p.Stats()[0].InFlight == 1 })
	ctx3, cancel3 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel3()
	req, _ = http.NewRequestWithContext(ctx3, http.MethodPost, srv.URL, strings.NewReader(chatBody))
	_, err = tr.RoundTrip(req)
	check("expired while waiting", err)

	// Through go-openai, which wraps what the http.Client returns.
	cfg := openai.DefaultConfig("placeholder")
	cfg.BaseURL = srv.URL + "/v1"
	cfg.HTTPClient = &http.Client{Transport: tr}
	ctx4, cancel4 := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel4()
	_, err = openai.NewClientWithConfig(cfg).GetModel(ctx4, "m")
	check("go-openai GetModel", err)
}
