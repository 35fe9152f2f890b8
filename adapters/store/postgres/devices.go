package postgres

import (
	"time"

	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kefuhq/kefu/core"
)

// Devices (push tokens): small, rare writes.

const deviceCols = `token, owner, topic, environment, created_at, updated_at`

// errDeviceKind: RegisterDevice found the token owned by the other kind of
// owner.
var errDeviceKind = fmt.Errorf("postgres: register device: %w: the device token is registered to another kind of account", core.ErrConflict)

// RegisterDevice implements core.Store: an upsert by token, then the owner's
// oldest registrations beyond its MaxDevices are dropped.
func (s *Store) RegisterDevice(ctx context.Context, d core.Device) (core.Device, error) {
	if err := d.Validate(); err != nil {
		return core.Device{}, fmt.Errorf("postgres: register device: %w", err)
	}
	d.UpdatedAt = s.nowOr(d.UpdatedAt)
	var out core.Device
	err := s.do(ctx, func(w *wtx) error {
		// The token moves only between owners of the same kind; a new owner
		// gets a new created_at.
		tag, err := w.exec(`INSERT INTO devices (`+deviceCols+`) VALUES ($1, $2, $3, $4, $5, $5)
			ON CONFLICT (token) DO UPDATE SET owner = excluded.owner, topic = excluded.topic,
				environment = excluded.environment, updated_at = excluded.updated_at,
				created_at = CASE WHEN devices.owner = excluded.owner THEN devices.created_at ELSE excluded.created_at END
			WHERE devices.owner LIKE $6`,
			d.Token, string(d.Owner), d.Topic, string(d.Environment), ts(d.UpdatedAt), d.Owner.Kind()+"%")
		if err != nil {
			return dbErr(err, "register device")
		}
		if tag.RowsAffected() == 0 {
			return errDeviceKind
		}
		if _, err := w.exec(`DELETE FROM devices WHERE owner = $1 AND token NOT IN
			(SELECT token FROM devices WHERE owner = $1 ORDER BY updated_at DESC, token LIMIT $2)`,
			string(d.Owner), d.Owner.MaxDevices()); err != nil {
			return dbErr(err, "trim devices")
		}
		out, err = scanDevice(w.queryRow(`SELECT `+deviceCols+` FROM devices WHERE token = $1`, d.Token))
		return dbErr(err, "read device")
	})
	if err != nil {
		return core.Device{}, err
	}
	return out, nil
}

// RemoveDevice implements core.Store.
func (s *Store) RemoveDevice(ctx context.Context, token string, owner core.DeviceOwner, notAfter time.Time) error {
	if token == "" || owner == "" {
		return invalid("a device is removed by its token and owner")
	}
	q, args := `DELETE FROM devices WHERE token = $1 AND owner = $2`, []any{token, string(owner)}
	if !notAfter.IsZero() {
		q, args = q+` AND updated_at <= $3`, append(args, notAfter)
	}
	return s.do(ctx, func(w *wtx) error {
		tag, err := w.exec(q, args...)
		if err != nil {
			return dbErr(err, "remove device")
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("postgres: device: %w", core.ErrNotFound)
		}
		return nil
	})
}

// Devices implements core.Store.
func (s *Store) Devices(ctx context.Context, owner core.DeviceOwner) ([]core.Device, error) {
	return list(ctx, s, scanDevice, "devices", `SELECT `+deviceCols+` FROM devices WHERE owner = $1
		ORDER BY updated_at DESC, token`, string(owner))
}

func scanDevice(r rowScanner) (core.Device, error) {
	var d core.Device
	var owner, env string
	var created, updated pgtype.Timestamptz
	if err := r.Scan(&d.Token, &owner, &d.Topic, &env, &created, &updated); err != nil {
		return core.Device{}, err
	}
	d.Owner, d.Environment = core.DeviceOwner(owner), core.PushEnvironment(env)
	d.CreatedAt, d.UpdatedAt = fromTS(created), fromTS(updated)
	return d, nil
}
