package slack

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kefuhq/kefu/core"
)

// The thread ↔ conversation mapping is kept in the store's settings, so it
// survives restarts and every node sees it:
//
//	slack.NAME.thread.CONV       "CHANNEL TS LAST FIRST"  (or "pending UNIX" while the parent is being posted)
//	slack.NAME.conv.CHANNEL.TS   "CONV"
//
// CHANNEL and TS name the parent message; LAST is the ID of the last
// message mirrored into the thread (so that a message the follower hands
// over again after a crash is not posted twice); FIRST is the customer
// message quoted in the parent (0: none). The reverse key is written
// before the forward one: a conversation whose forward key is complete can
// always be found from its thread.

// thread is a conversation's Slack thread.
type thread struct {
	Channel string
	TS      string
	Last    int64
	First   int64
}

func (t thread) String() string {
	return fmt.Sprintf("%s %s %d %d", t.Channel, t.TS, t.Last, t.First)
}

// threadState is what the forward key holds.
type threadState int

const (
	threadNone    threadState = iota // no thread yet
	threadPending                    // a parent may have been posted; its ts was not saved
	threadMapped                     // the thread is known
)

func (c *Channel) threadKey(convID int64) string {
	return "slack." + c.name + ".thread." + strconv.FormatInt(convID, 10)
}

func (c *Channel) convKey(channel, ts string) string {
	return "slack." + c.name + ".conv." + channel + "." + ts
}

// loadThread reads a conversation's thread. For a pending one, since is
// when its parent was about to be posted.
func (c *Channel) loadThread(ctx context.Context, convID int64) (th thread, st threadState, since time.Time, err error) {
	v, err := c.store.Setting(ctx, c.threadKey(convID))
	if errors.Is(err, core.ErrNotFound) {
		return th, threadNone, since, nil
	}
	if err != nil {
		return th, threadNone, since, err
	}
	f := strings.Fields(v)
	if len(f) == 2 && f[0] == "pending" {
		sec, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return th, threadNone, since, fmt.Errorf("slack: malformed thread mapping %q", v)
		}
		return th, threadPending, time.Unix(sec, 0), nil
	}
	if len(f) != 4 {
		return th, threadNone, since, fmt.Errorf("slack: malformed thread mapping %q", v)
	}
	th.Channel, th.TS = f[0], f[1]
	th.Last, err = strconv.ParseInt(f[2], 10, 64)
	if err == nil {
		th.First, err = strconv.ParseInt(f[3], 10, 64)
	}
	if err != nil {
		return th, threadNone, since, fmt.Errorf("slack: malformed thread mapping %q", v)
	}
	return th, threadMapped, since, nil
}

// markPending records that a parent is about to be posted.
func (c *Channel) markPending(ctx context.Context, convID int64, at time.Time) error {
	return c.store.PutSetting(ctx, c.threadKey(convID), "pending "+strconv.FormatInt(at.Unix(), 10))
}

// saveThread stores a conversation's thread, reverse key first.
func (c *Channel) saveThread(ctx context.Context, convID int64, th thread, isNew bool) error {
	if isNew {
		if err := c.store.PutSetting(ctx, c.convKey(th.Channel, th.TS), strconv.FormatInt(convID, 10)); err != nil {
			return err
		}
	}
	return c.store.PutSetting(ctx, c.threadKey(convID), th.String())
}

// conversationOf finds the conversation of the thread whose parent is
// (channel, ts). ok is false when kefu knows no such thread.
func (c *Channel) conversationOf(ctx context.Context, channel, ts string) (convID int64, ok bool, err error) {
	v, err := c.store.Setting(ctx, c.convKey(channel, ts))
	if errors.Is(err, core.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("slack: malformed conversation mapping %q", v)
	}
	return id, true, nil
}
