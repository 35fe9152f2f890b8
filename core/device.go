package core

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Devices: the push tokens of mobile apps (APNs device tokens), by which
// kefu reaches a customer or an agent whose app has no live socket (see
// package push). Tokens live in the store so that every node of a cluster
// knows them.

// DeviceOwner names whose device a token is: an agent (AgentDevices) or a
// customer's identity on a channel instance (IdentityDevices). A customer's
// devices belong to the identity rather than the contact, so that an app
// can register its token before its user has written anything (the contact
// exists only from the first message) and so that every conversation of the
// identity finds them.
type DeviceOwner string

// AgentDevices is the owner of an agent's devices.
func AgentDevices(agentID int64) DeviceOwner {
	return DeviceOwner("agent:" + strconv.FormatInt(agentID, 10))
}

// IdentityDevices is the owner of the devices of a customer known to channel
// instance channel as externalID (a web visitor's identity).
func IdentityDevices(channel, externalID string) DeviceOwner {
	return DeviceOwner("identity:" + channel + ":" + externalID)
}

// Kind is the owner's kind with its separator, "agent:" or "identity:"
// ("" for an invalid owner). A token moves only between owners of the same
// kind (see DeviceStore.RegisterDevice).
func (o DeviceOwner) Kind() string {
	for _, k := range []string{"agent:", "identity:"} {
		if strings.HasPrefix(string(o), k) {
			return k
		}
	}
	return ""
}

// MaxDevices is how many devices o keeps: MaxDevicesPerAgent for an agent,
// MaxDevicesPerIdentity for a customer's identity.
func (o DeviceOwner) MaxDevices() int {
	if o.Kind() == "agent:" {
		return MaxDevicesPerAgent
	}
	return MaxDevicesPerIdentity
}

// Valid reports whether o was made by AgentDevices or IdentityDevices with
// usable arguments.
func (o DeviceOwner) Valid() bool {
	if id, ok := strings.CutPrefix(string(o), "agent:"); ok {
		n, err := strconv.ParseInt(id, 10, 64)
		return err == nil && n > 0 && strconv.FormatInt(n, 10) == id
	}
	if rest, ok := strings.CutPrefix(string(o), "identity:"); ok {
		ch, ext, ok := strings.Cut(rest, ":")
		return ok && ch != "" && ext != ""
	}
	return false
}

// PushEnvironment is the APNs environment a device token was issued for: an
// app built for development gets sandbox tokens, an App Store or TestFlight
// build production ones. A token is only valid in its own environment.
type PushEnvironment string

const (
	PushProduction PushEnvironment = "production"
	PushSandbox    PushEnvironment = "sandbox"
)

// Valid reports whether e is a known environment, or "" (the pusher's
// configured one).
func (e PushEnvironment) Valid() bool { return e == "" || e == PushProduction || e == PushSandbox }

// Limits of a device registration.
const (
	// MinDeviceTokenBytes and MaxDeviceTokenBytes bound a token's length.
	// APNs tokens are 32 bytes today; Apple says they may grow, and caps
	// them at 100.
	MinDeviceTokenBytes = 32
	MaxDeviceTokenBytes = 100
	// MaxDeviceTopic bounds a topic (the app's bundle id).
	MaxDeviceTopic = 255
	// MaxDevicesPerAgent and MaxDevicesPerIdentity are how many devices
	// one owner keeps (DeviceOwner.MaxDevices): registering one more drops
	// the owner's least recently registered one. A customer's identity
	// keeps fewer: identities cost nothing to create.
	MaxDevicesPerAgent    = 20
	MaxDevicesPerIdentity = 5
)

// Device is one app installation that can receive pushes.
type Device struct {
	// Token is the device token as lower-case hex (NormalizeDeviceToken).
	// It identifies the device store-wide: registering a token again for an
	// owner of the same kind replaces the earlier registration (a phone
	// that changed hands or users); see DeviceStore.RegisterDevice.
	Token string `json:"token"`
	// Owner is whose device it is.
	Owner DeviceOwner `json:"-"`
	// Topic is the app's bundle id (apns-topic); "" means the pusher's
	// configured topic.
	Topic string `json:"topic"`
	// Environment is where the token was issued; "" means the pusher's
	// configured environment.
	Environment PushEnvironment `json:"environment"`
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"` // last registration
}

// NormalizeDeviceToken checks that s is a device token written in hex
// (either case, MinDeviceTokenBytes to MaxDeviceTokenBytes bytes) and
// returns it in lower case. Anything else is ErrInvalid.
func NormalizeDeviceToken(s string) (string, error) {
	if len(s)%2 != 0 || len(s) < 2*MinDeviceTokenBytes || len(s) > 2*MaxDeviceTokenBytes {
		return "", fmt.Errorf("%w: a device token is %d to %d bytes written as hex digits", ErrInvalid, MinDeviceTokenBytes, MaxDeviceTokenBytes)
	}
	if _, err := hex.DecodeString(s); err != nil {
		return "", fmt.Errorf("%w: a device token is written as hex digits", ErrInvalid)
	}
	return strings.ToLower(s), nil
}

// ValidTopic reports whether topic looks like an app's bundle id (with an
// optional APNs suffix such as ".voip"): letters, digits, '.', '-' and '_',
// starting with a letter or digit, at most MaxDeviceTopic bytes. A device's
// topic may also be empty (see Device.Topic).
func ValidTopic(topic string) bool {
	if topic == "" || len(topic) > MaxDeviceTopic {
		return false
	}
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '.' || c == '-' || c == '_') && i > 0:
		default:
			return false
		}
	}
	return true
}

// Validate checks d for RegisterDevice: a normalized token, a valid owner,
// and a valid or empty topic and environment. Problems are ErrInvalid.
func (d Device) Validate() error {
	tok, err := NormalizeDeviceToken(d.Token)
	switch {
	case err != nil:
		return err
	case tok != d.Token:
		return fmt.Errorf("%w: device token must be lower-case hex", ErrInvalid)
	case !d.Owner.Valid():
		return fmt.Errorf("%w: device owner %q", ErrInvalid, d.Owner)
	case d.Topic != "" && !ValidTopic(d.Topic):
		return fmt.Errorf("%w: topic must be an app bundle id (letters, digits, '.', '-', '_'; at most %d bytes)", ErrInvalid, MaxDeviceTopic)
	case !d.Environment.Valid():
		return fmt.Errorf("%w: environment must be %s or %s, got %q", ErrInvalid, PushProduction, PushSandbox, d.Environment)
	}
	return nil
}

// DeviceStore keeps device tokens. It is part of Store, under Store's
// contract (atomic, durable writes; safe for concurrent use).
type DeviceStore interface {
	// RegisterDevice stores d (see Device.Validate; ErrInvalid otherwise),
	// replacing the registration of the same token when its owner is of
	// the same kind (DeviceOwner.Kind): an agent's token moves only to
	// another agent, a customer's only to another identity. A token owned
	// by the other kind is ErrConflict and changes nothing, so that a
	// visitor, whose identity costs nothing, cannot take an agent's device.
	// UpdatedAt is set to d.UpdatedAt (now when zero); CreatedAt is kept
	// when the owner stays the same and set to UpdatedAt when the token
	// changes owner. When the owner then has more than its MaxDevices, the
	// least recently registered ones are removed. It returns the device as
	// stored.
	RegisterDevice(ctx context.Context, d Device) (Device, error)
	// RemoveDevice deletes owner's device with the token: an app signing
	// out, or the push provider saying the token is gone (only the
	// registration that was pushed: the token may have moved since, and
	// with notAfter not zero a registration updated after notAfter, the
	// app registering again since, is kept). owner "" is ErrInvalid; a
	// token the owner does not have, or has registered since, is
	// ErrNotFound.
	RemoveDevice(ctx context.Context, token string, owner DeviceOwner, notAfter time.Time) error
	// Devices lists the owner's devices, most recently registered first.
	Devices(ctx context.Context, owner DeviceOwner) ([]Device, error)
}
