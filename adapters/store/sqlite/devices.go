package sqlite

import (
	"time"

	"context"
	"fmt"

	"github.com/kefuhq/kefu/core"
)

// Devices (push tokens): small, rare writes, so their statements are not
// prepared ahead.

const deviceCols = `token, owner, topic, environment, created_at, updated_at`

// errDeviceKind: RegisterDevice found the token owned by the other kind of
// owner.
var errDeviceKind = fmt.Errorf("sqlite: register device: %w: the device token is registered to another kind of account", core.ErrConflict)

// RegisterDevice implements core.Store: an upsert by token, then the owner's
// oldest registrations beyond its MaxDevices are dropped.
func (s *Store) RegisterDevice(ctx context.Context, d core.Device) (core.Device, error) {
	if err := d.Validate(); err != nil {
		return core.Device{}, fmt.Errorf("sqlite: register device: %w", err)
	}
	d.UpdatedAt = s.nowOr(d.UpdatedAt)
	var out core.Device
	err := s.do(ctx, func(w *wtx) error {
		// The token moves only between owners of the same kind; a new owner
		// gets a new created_at.
		res, err := w.tx.ExecContext(w.ctx, `INSERT INTO devices (`+deviceCols+`) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (token) DO UPDATE SET owner = excluded.owner, topic = excluded.topic,
				environment = excluded.environment, updated_at = excluded.updated_at,
				created_at = CASE WHEN devices.owner = excluded.owner THEN devices.created_at ELSE excluded.created_at END
			WHERE devices.owner LIKE ?`,
			d.Token, string(d.Owner), d.Topic, string(d.Environment), toDB(d.UpdatedAt), toDB(d.UpdatedAt), d.Owner.Kind()+"%")
		if err != nil {
			return dbErr(err, "register device")
		}
		if n, err := res.RowsAffected(); err != nil {
			return dbErr(err, "register device")
		} else if n == 0 {
			return errDeviceKind
		}
		if _, err := w.tx.ExecContext(w.ctx, `DELETE FROM devices WHERE owner = ? AND token NOT IN
			(SELECT token FROM devices WHERE owner = ? ORDER BY updated_at DESC, token LIMIT ?)`,
			string(d.Owner), string(d.Owner), d.Owner.MaxDevices()); err != nil {
			return dbErr(err, "trim devices")
		}
		out, err = scanDevice(w.tx.QueryRowContext(w.ctx, `SELECT `+deviceCols+` FROM devices WHERE token = ?`, d.Token))
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
	q, args := `DELETE FROM devices WHERE token = ? AND owner = ?`, []any{token, string(owner)}
	if !notAfter.IsZero() {
		q, args = q+` AND updated_at <= ?`, append(args, toDB(notAfter))
	}
	return s.do(ctx, func(w *wtx) error {
		res, err := w.tx.ExecContext(w.ctx, q, args...)
		if err != nil {
			return dbErr(err, "remove device")
		}
		n, err := res.RowsAffected()
		if err != nil {
			return dbErr(err, "remove device")
		}
		if n == 0 {
			return fmt.Errorf("sqlite: device: %w", core.ErrNotFound)
		}
		return nil
	})
}

// Devices implements core.Store.
func (s *Store) Devices(ctx context.Context, owner core.DeviceOwner) ([]core.Device, error) {
	if s.isClosed.Load() {
		return nil, core.ErrClosed
	}
	rows, err := s.query(ctx, `SELECT `+deviceCols+` FROM devices WHERE owner = ?
		ORDER BY updated_at DESC, token`, string(owner))
	if err != nil {
		return nil, s.readErr(err, "devices")
	}
	defer rows.Close()
	var out []core.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, s.readErr(err, "devices")
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, s.readErr(err, "devices")
	}
	return out, nil
}

func scanDevice(r scanner) (core.Device, error) {
	var d core.Device
	var owner, env string
	var created, updated int64
	if err := r.Scan(&d.Token, &owner, &d.Topic, &env, &created, &updated); err != nil {
		return core.Device{}, err
	}
	d.Owner, d.Environment = core.DeviceOwner(owner), core.PushEnvironment(env)
	d.CreatedAt, d.UpdatedAt = fromDB(created), fromDB(updated)
	return d, nil
}
