package telegram

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/go-telegram/bot"

	"github.com/kefuhq/kefu/config"
)

// setWebhook registers url and secret with Telegram, asking for
// AllowedUpdates only. Updates Telegram already holds are kept.
func setWebhook(ctx context.Context, b *bot.Bot, url, secret string) error {
	_, err := b.SetWebhook(ctx, &bot.SetWebhookParams{URL: url, SecretToken: secret, AllowedUpdates: AllowedUpdates})
	return err
}

// SetWebhookCommand is `kefu telegram set-webhook`: it registers the
// webhook of one telegram instance of cfg (the one named name, or the only
// enabled one when name is empty) with Telegram: the URL
// {server.public_url}/webhooks/NAME, the instance's webhook_secret, and
// the update types kefu reads. It then prints what Telegram reports about
// the webhook (updates waiting, its last delivery error).
func SetWebhookCommand(ctx context.Context, cfg *config.Config, name string, out io.Writer) error {
	inst, err := pickInstance(cfg, name)
	if err != nil {
		return err
	}
	tc := inst.Config.(*Config)
	switch {
	case tc.Mode != ModeWebhook:
		return fmt.Errorf("channel %s is in %s mode; a webhook would stop its polling (set mode: webhook first)", inst.Name, tc.Mode)
	case cfg.Server.PublicURL == "":
		return errors.New("server.public_url is not set: Telegram needs the public https address it posts updates to")
	}
	b, err := newBot(*tc)
	if err != nil {
		return err
	}
	redact := func(err error) error {
		if err == nil || !strings.Contains(err.Error(), tc.Token) {
			return err
		}
		return &redactedError{msg: strings.ReplaceAll(err.Error(), tc.Token, "***"), err: err}
	}
	url := WebhookURL(cfg.Server.PublicURL, inst.Name)
	if err := setWebhook(ctx, b, url, tc.WebhookSecret); err != nil {
		return fmt.Errorf("channel %s: setWebhook %s: %w", inst.Name, url, redact(err))
	}
	fmt.Fprintf(out, "%s: Telegram now posts updates to %s (types: %s)\n", inst.Name, url, strings.Join(AllowedUpdates, ", "))
	info, err := b.GetWebhookInfo(ctx)
	if err != nil {
		fmt.Fprintf(out, "%s: could not read the webhook back: %v\n", inst.Name, redact(err))
		return nil
	}
	fmt.Fprintf(out, "%s: %d updates waiting\n", inst.Name, info.PendingUpdateCount)
	if info.LastErrorMessage != "" {
		fmt.Fprintf(out, "%s: last delivery error (%s): %s\n", inst.Name,
			time.Unix(int64(info.LastErrorDate), 0).UTC().Format(time.RFC3339), info.LastErrorMessage)
	}
	return nil
}

// pickInstance finds the telegram instance the command is about.
func pickInstance(cfg *config.Config, name string) (*config.ChannelInstance, error) {
	if name != "" {
		inst, ok := cfg.Channels[name]
		switch {
		case !ok:
			return nil, fmt.Errorf("no channel %q in the config", name)
		case inst.Type != Type:
			return nil, fmt.Errorf("channel %s is of type %s, not %s", name, inst.Type, Type)
		case !inst.Enabled:
			return nil, fmt.Errorf("channel %s is not enabled", name)
		}
		return inst, nil
	}
	var found []*config.ChannelInstance
	for _, inst := range cfg.Channels {
		if inst.Type == Type && inst.Enabled {
			found = append(found, inst)
		}
	}
	switch len(found) {
	case 0:
		return nil, errors.New("no enabled telegram channel in the config")
	case 1:
		return found[0], nil
	}
	names := make([]string, len(found))
	for i, inst := range found {
		names[i] = inst.Name
	}
	sort.Strings(names)
	return nil, fmt.Errorf("several telegram channels (%s): choose one with --channel", strings.Join(names, ", "))
}
