package keypool

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// WithLogger logs what the pool does to l, through an Observer:
//
//   - at Warn, keys and accounts taken out of rotation (disabled,
//     ejected, a model mapping refused) and retries the retry budget
//     refused, each with its cause, as
//     "keypool: key sk-…abcd disabled for 30m0s: 401 invalid_api_key";
//   - at Info, accounts cooling down after a 429 and keys back in
//     rotation;
//   - at Debug, every attempt, every request and every change of a
//     learned limit.
//
// Keys are named by their Name, a masked secret unless Key.Name says
// otherwise; no secret is ever logged. Each record also carries the
// figures as attributes (key, account, state, until, cause, status, ...)
// for structured handlers.
func WithLogger(l *slog.Logger) Option {
	if l == nil {
		return func(*poolConfig) error { return invalid("WithLogger", "nil *slog.Logger") }
	}
	lg := logger{l}
	return WithObserver(Observer{
		Attempt: lg.attempt, State: lg.state, Limit: lg.limit,
		RetryRefused: lg.retryRefused, Request: lg.request,
	})
}

// logger turns events into log records.
type logger struct{ l *slog.Logger }

func (lg logger) log(level slog.Level, msg string, attrs ...slog.Attr) {
	lg.l.LogAttrs(context.Background(), level, "keypool: "+msg, attrs...)
}

func (lg logger) state(e StateEvent) {
	attrs := []slog.Attr{slog.String("key", e.Key), slog.String("state", e.State.String()), slog.String("cause", e.Cause)}
	if e.Account != "" {
		attrs = append(attrs, slog.String("account", e.Account))
	}
	if !e.Until.IsZero() {
		attrs = append(attrs, slog.Time("until", e.Until))
	}
	who := "key " + e.Key
	if e.Account != "" {
		who += " (account " + e.Account + ")"
	}
	switch {
	case e.Model != "":
		attrs = append(attrs, slog.String("model", e.Model))
		lg.log(slog.LevelWarn, fmt.Sprintf("%s stops serving model %s for %s: %s", who, e.Model, lasting(e), e.Cause), attrs...)
	case e.State == StateDisabled:
		lg.log(slog.LevelWarn, fmt.Sprintf("%s disabled for %s: %s", who, lasting(e), e.Cause), attrs...)
	case e.State == StateEjected:
		lg.log(slog.LevelWarn, fmt.Sprintf("%s ejected: %s; next probe in %s", who, e.Cause, lasting(e)), attrs...)
	case e.State == StateCooling:
		lg.log(slog.LevelInfo, fmt.Sprintf("%s cooling down for %s: %s", who, lasting(e), e.Cause), attrs...)
	default:
		lg.log(slog.LevelInfo, fmt.Sprintf("%s %s: %s", who, e.State, e.Cause), attrs...)
	}
}

// lasting says how long the state of e lasts.
func lasting(e StateEvent) string {
	if e.Until.UnixNano() == disabledForever {
		return "good (until Pool.Enable)"
	}
	return e.Until.Sub(e.At).Round(time.Millisecond).String()
}

func (lg logger) limit(e LimitEvent) {
	if !lg.l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	lg.log(slog.LevelDebug, fmt.Sprintf("key %s: learned limit %d → %d", e.Key, e.From, e.To),
		slog.String("key", e.Key), slog.Int("from", e.From), slog.Int("to", e.To), slog.Int("overload_level", e.OverloadLevel))
}

func (lg logger) retryRefused(e RetryRefusedEvent) {
	what := fmt.Sprintf("HTTP %d", e.Status)
	if e.Status == 0 && e.Err != nil {
		what = e.Err.Error()
	}
	lg.log(slog.LevelWarn, fmt.Sprintf("retry budget spent: no retry after key %s's %s", e.Key, what),
		slog.String("key", e.Key), slog.Int("status", e.Status))
}

func (lg logger) attempt(e AttemptEvent) {
	if !lg.l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	attrs := []slog.Attr{
		slog.String("key", e.Key), slog.Int("attempt", e.Number), slog.Int("status", e.Status),
		slog.String("effect", e.Outcome.Effect.String()), slog.String("retry", e.Outcome.Retry.String()),
		slog.Duration("waited", e.Waited), slog.Duration("took", e.Took),
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	lg.log(slog.LevelDebug, "attempt", attrs...)
}

func (lg logger) request(e RequestEvent) {
	if !lg.l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", e.Method), slog.String("path", e.Path), slog.String("key", e.Key),
		slog.Int("status", e.Status), slog.Int("attempts", len(e.Attempts)),
		slog.Duration("waited", e.Waited), slog.Duration("took", e.Took),
	}
	if e.Model != "" {
		attrs = append(attrs, slog.String("model", e.Model))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	lg.log(slog.LevelDebug, "request", attrs...)
}
