package node

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/kefuhq/kefu/adapters/media/local"
	mediapg "github.com/kefuhq/kefu/adapters/media/postgres"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/media"
)

// openMedia opens the media backend media.driver names. The postgres one
// lives in the store's database (store.dsn), whose tables the store's
// migrations create: open the store first.
func openMedia(ctx context.Context, c config.Media, s config.Store, log *slog.Logger) (media.Backend, error) {
	switch c.Driver {
	case config.MediaLocal:
		b, err := local.New(c.Dir)
		if err != nil { // not a typed nil in the interface
			return nil, err
		}
		return b, nil
	case config.MediaPostgres:
		if s.Driver != config.StorePostgres {
			return nil, fmt.Errorf("media.driver postgres needs store.driver postgres, not %q", s.Driver)
		}
		b, err := mediapg.Open(ctx, mediapg.Options{DSN: s.DSN, Logger: log})
		if err != nil {
			return nil, err
		}
		return b, nil
	default:
		return nil, fmt.Errorf("media.driver %q is not available in this build", c.Driver)
	}
}
