package bridge

import (
	"context"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
)

// NewWatermillLogger adapts l (nil: slog.Default()) to watermill's logger.
// Watermill's Trace becomes watermill.LevelTrace (below Debug).
//
// It is watermill.NewSlogLogger with one difference that matters on the
// hot path: it asks l whether a level is enabled before it converts the
// fields, so the Trace and Debug lines watermill's publishers, subscribers
// and router write for every message cost nothing when they are off.
func NewWatermillLogger(l *slog.Logger) watermill.LoggerAdapter {
	return newWatermillLogger(l, slog.LevelInfo)
}

// NewQuietWatermillLogger is NewWatermillLogger with watermill's Info lines
// logged at Debug, for components whose Info lines can come once per
// message; the Redis and NATS buses use it.
func NewQuietWatermillLogger(l *slog.Logger) watermill.LoggerAdapter {
	return newWatermillLogger(l, slog.LevelDebug)
}

func newWatermillLogger(l *slog.Logger, info slog.Level) watermill.LoggerAdapter {
	if l == nil {
		l = slog.Default()
	}
	return slogAdapter{l: l, info: info}
}

type slogAdapter struct {
	l    *slog.Logger
	info slog.Level // the level watermill's Info is logged at
}

func (a slogAdapter) Error(msg string, err error, fields watermill.LogFields) {
	a.log(slog.LevelError, msg, fields, slog.Any("err", err))
}

func (a slogAdapter) Info(msg string, fields watermill.LogFields) { a.log(a.info, msg, fields) }

func (a slogAdapter) Debug(msg string, fields watermill.LogFields) {
	a.log(slog.LevelDebug, msg, fields)
}

func (a slogAdapter) Trace(msg string, fields watermill.LogFields) {
	a.log(watermill.LevelTrace, msg, fields)
}

func (a slogAdapter) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return slogAdapter{l: a.l.With(attrs(fields)...), info: a.info}
}

func (a slogAdapter) log(level slog.Level, msg string, fields watermill.LogFields, extra ...any) {
	ctx := context.Background()
	if !a.l.Enabled(ctx, level) {
		return
	}
	a.l.Log(ctx, level, msg, append(attrs(fields), extra...)...)
}

func attrs(fields watermill.LogFields) []any {
	out := make([]any, 0, 2*len(fields)+1)
	for k, v := range fields {
		out = append(out, slog.Any(k, v))
	}
	return out
}
