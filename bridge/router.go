package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmetrics "github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/prometheus/client_golang/prometheus"
)

// RouterConfig configures NewRouter. Zero fields take the defaults noted.
type RouterConfig struct {
	// Publisher publishes messages that exhausted their retries to
	// PoisonTopic; normally Bus.Publisher(). Required.
	Publisher message.Publisher
	// Logger receives watermill's logs and one error per poisoned message.
	// nil: slog.Default().
	Logger *slog.Logger
	// Registry, when set, gets watermill's router metrics (handler time,
	// publish time, messages received) under kefu_bus_*.
	Registry *prometheus.Registry
	// Metrics counts poisoned messages. nil: not counted.
	Metrics *Metrics
	// MaxRetries is how often a failed handler is retried before its message
	// goes to the poison topic. Default 3; negative: no retries.
	MaxRetries int
	// RetryInitialInterval is the wait before the first retry, doubled for
	// each further retry up to RetryMaxInterval. Defaults 100 ms and 1 s.
	RetryInitialInterval time.Duration
	RetryMaxInterval     time.Duration
	// HandlerTimeout bounds one attempt of a handler: its message's context
	// is cancelled after it. Default 30 s.
	HandlerTimeout time.Duration
	// CloseTimeout bounds how long Close waits for running handlers.
	// Default 30 s.
	CloseTimeout time.Duration
}

func (c *RouterConfig) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.MaxRetries == 0:
		c.MaxRetries = 3
	case c.MaxRetries < 0:
		c.MaxRetries = 0
	}
	if c.RetryInitialInterval <= 0 {
		c.RetryInitialInterval = 100 * time.Millisecond
	}
	if c.RetryMaxInterval <= 0 {
		c.RetryMaxInterval = time.Second
	}
	if c.HandlerTimeout <= 0 {
		c.HandlerTimeout = 30 * time.Second
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 30 * time.Second
	}
}

// NewRouter returns a watermill Router with kefu's middleware, outermost
// first:
//
//  1. CorrelationID: what a handler publishes keeps the correlation id of
//     the message it handles.
//  2. PoisonQueue: a message whose handler still fails after the retries
//     is published to PoisonTopic (reason in middleware.ReasonForPoisonedKey),
//     logged, counted, and acked, so it does not block its topic.
//  3. Retry: MaxRetries retries with exponential backoff, resetting the
//     message context on each retry (Timeout below would otherwise leave
//     every retry with a cancelled context).
//  4. Timeout: each attempt's context ends after HandlerTimeout.
//  5. Recoverer: a panic becomes an error, so it is retried and poisoned
//     like any failure.
//
// There is no Deduplicator: it records a message before the handler runs,
// so a retried or redelivered message would be dropped and acked silently.
// De-duplication lives in the store's unique keys, cluster-wide.
//
// Handlers are added by the caller; r.Run(ctx) runs them until ctx ends or
// r.Close. Closing the router does not close the Bus (see Bus).
func NewRouter(cfg RouterConfig) (*message.Router, error) {
	if cfg.Publisher == nil {
		return nil, errors.New("bridge.NewRouter: nil Publisher")
	}
	cfg.setDefaults()
	logger := NewWatermillLogger(cfg.Logger)
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.CloseTimeout}, logger)
	if err != nil {
		return nil, fmt.Errorf("bridge: new router: %w", err)
	}
	poison, err := middleware.PoisonQueue(poisonPublisher{pub: cfg.Publisher, log: cfg.Logger, metrics: cfg.Metrics}, PoisonTopic)
	if err != nil {
		return nil, fmt.Errorf("bridge: poison queue: %w", err)
	}
	r.AddMiddleware(
		middleware.CorrelationID,
		poison,
		middleware.Retry{
			MaxRetries:          cfg.MaxRetries,
			InitialInterval:     cfg.RetryInitialInterval,
			MaxInterval:         cfg.RetryMaxInterval,
			Multiplier:          2,
			ResetContextOnRetry: true,
			// A failed attempt that will be retried is a warning; the final
			// failure is logged by the poison publisher.
			Logger: retryLogger{NewWatermillLogger(cfg.Logger), cfg.Logger},
		}.Middleware,
		middleware.Timeout(cfg.HandlerTimeout),
		middleware.Recoverer,
	)
	if cfg.Registry != nil {
		wmetrics.NewPrometheusMetricsBuilder(cfg.Registry, "kefu", "bus").AddPrometheusRouterMetrics(r)
	}
	return r, nil
}

// retryLogger logs the Retry middleware's "retrying" errors as warnings:
// the final failure is logged by the poison publisher.
type retryLogger struct {
	watermill.LoggerAdapter
	l *slog.Logger
}

func (r retryLogger) Error(msg string, err error, fields watermill.LogFields) {
	if !r.l.Enabled(context.Background(), slog.LevelWarn) {
		return
	}
	r.l.Warn(msg, append(attrs(fields), slog.Any("err", err))...)
}

// poisonPublisher logs and counts each poisoned message before publishing
// it, so a poisoned message is visible even where nothing consumes the
// poison topic (the memory bus drops it).
type poisonPublisher struct {
	pub     message.Publisher
	log     *slog.Logger
	metrics *Metrics
}

func (p poisonPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		handler := m.Metadata.Get(middleware.PoisonedHandlerKey)
		p.metrics.poison(handler)
		p.log.Error("bus: message poisoned after retries",
			"handler", handler,
			"topic", m.Metadata.Get(middleware.PoisonedTopicKey),
			"message_uuid", m.UUID,
			"correlation_id", m.Metadata.Get(MetaCorrelationID),
			"reason", m.Metadata.Get(middleware.ReasonForPoisonedKey))
	}
	return p.pub.Publish(topic, msgs...)
}

// Close does nothing: the Bus owns the publisher.
func (poisonPublisher) Close() error { return nil }
