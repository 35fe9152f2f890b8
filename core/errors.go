package core

import (
	"errors"
	"fmt"
)

// Sentinel errors. Stores and the Service wrap them with %w; callers test
// with errors.Is.
var (
	// ErrNotFound: the row does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the state changed under the caller (another agent took
	// the conversation first, a status moved, an email is taken).
	ErrConflict = errors.New("conflict")
	// ErrStale: the row changed since the caller read it (another node's
	// change came between); nothing was written. It is an ErrConflict: read
	// again and retry.
	ErrStale = fmt.Errorf("%w: changed since it was read", ErrConflict)
	// ErrCapacity: the agent already has routing.max_open_per_agent open
	// conversations.
	ErrCapacity = errors.New("agent at capacity")
	// ErrClosed: the store or service has been closed.
	ErrClosed = errors.New("closed")
	// ErrInvalid: the request is malformed (empty message, unknown status…).
	ErrInvalid = errors.New("invalid request")
	// ErrForbidden: the caller may not do this.
	ErrForbidden = errors.New("forbidden")
	// ErrWindowClosed: the provider's reply window for this conversation has
	// closed (WhatsApp 24 h, WeChat 48 h).
	ErrWindowClosed = errors.New("reply window closed")
)
