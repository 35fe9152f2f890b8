// Package push delivers what a mobile app's socket missed as push
// notifications: when a message's recipient has no live socket on any node,
// or has one that did not acknowledge the message within fallback_after, a
// Fallback sends an alert to the recipient's registered devices through a
// Pusher (push/apns is the one kefu ships).
//
// The Fallback knows nothing of APNs; a Pusher knows nothing of presence,
// conversations or the store. They meet at Notification and at the typed
// outcomes a Pusher reports: ErrGone (remove the token), *RetryError (try
// again later) and ErrProviderAuth (the provider refuses kefu's
// credentials; the pusher is unhealthy until a push succeeds).
package push

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kefuhq/kefu/core"
)

// Pusher sends one notification to one device through a push provider.
//
// Implementations are safe for concurrent use. Push returns nil once the
// provider accepted the notification. Otherwise its error is, or wraps:
//   - ErrGone: the token is no longer valid for the app (uninstalled, or
//     never valid for this topic); the caller removes the device. A
//     *GoneError also says since when: a registration made later is kept.
//   - *RetryError: a temporary refusal (throttled, provider trouble, a
//     network failure); the same push may succeed later.
//   - ErrProviderAuth: the provider refused kefu's credentials (a revoked or
//     mistyped key): no push will succeed until the configuration is fixed.
//
// Any other error is permanent for this notification (a payload the
// provider rejects) and says nothing about the device. ctx bounds the call;
// Push does not retry by itself.
type Pusher interface {
	Push(ctx context.Context, n Notification) error
}

// Notification is one alert for one device.
type Notification struct {
	// Device is where it goes: token, topic, environment ("" means the
	// pusher's configured default).
	Device core.Device
	// Title is who wrote: the agent's name for a customer, the customer's
	// name (or the conversation's number) for an agent. May be empty.
	Title string
	// Body is the message text, cut to MaxBody bytes on a UTF-8 boundary;
	// "[image]" or "[file]" for media.
	Body string
	// Badge is the recipient's unread count, which the app shows on its icon.
	Badge int
	// ConversationID and Seq say where the app resumes from: it opens its
	// socket with this conversation and a cursor below Seq. They travel as
	// custom data ("conversation_id", "seq"); the conversation id is also
	// the thread id (grouping) and the collapse id, so a newer alert for the
	// same conversation replaces an older one on the device.
	ConversationID int64
	Seq            int64
	// MessageID is the message the alert announces.
	MessageID int64
	// Expiration is when the provider may stop trying to deliver it (the
	// device is off); zero lets the provider decide.
	Expiration time.Time
}

// TopicsOf is Config.Topics for the pusher at index i of a deployment's
// pushers, whose apps (topics) are apps, in the order of their names: its
// own app, and for the first also the devices registered without a topic.
// Nil when there is one pusher: it pushes every device.
func TopicsOf(apps []string, i int) []string {
	if len(apps) < 2 {
		return nil
	}
	if i == 0 {
		return []string{apps[i], ""}
	}
	return []string{apps[i]}
}

// CollapseID is the notification's collapse and thread id: its
// conversation's id in decimal.
func (n Notification) CollapseID() string { return fmt.Sprint(n.ConversationID) }

// ErrGone is wrapped by Push errors that mean the device token must be
// removed.
var ErrGone = errors.New("push: device token is no longer valid")

// GoneError is an ErrGone that says when the provider last found the token
// invalid (APNs's 410 carries it). A registration made after that is newer
// than the refusal (the app registered the token again since) and is kept.
type GoneError struct {
	// Since is when the provider last confirmed the token invalid, to the
	// second.
	Since time.Time
	// Err says what the provider answered.
	Err error
}

func (e *GoneError) Error() string {
	return fmt.Sprintf("%v (invalid since %s)", e.Err, e.Since.UTC().Format(time.RFC3339))
}

// Unwrap makes a GoneError an ErrGone, and the provider's answer.
func (e *GoneError) Unwrap() []error { return []error{ErrGone, e.Err} }

// ErrProviderAuth is wrapped by Push errors that mean the provider refused
// kefu's credentials.
var ErrProviderAuth = errors.New("push: the provider refused kefu's credentials")

// RetryError is a temporary failure: the same push may succeed later.
type RetryError struct {
	// After is how long to wait before retrying, when the provider said;
	// 0 leaves it to the caller's backoff.
	After time.Duration
	// Err says what went wrong.
	Err error
}

func (e *RetryError) Error() string {
	if e.After > 0 {
		return fmt.Sprintf("%v (retry after %s)", e.Err, e.After)
	}
	return fmt.Sprintf("%v (temporary)", e.Err)
}

func (e *RetryError) Unwrap() error { return e.Err }
