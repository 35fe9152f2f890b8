package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// deviceToken returns a 32-byte token in lower-case hex, distinct for each n.
func deviceToken(n int) string { return fmt.Sprintf("%064x", n+1) }

func device(n int, owner core.DeviceOwner, when time.Time) core.Device {
	return core.Device{Token: deviceToken(n), Owner: owner, Topic: "com.example.app",
		Environment: core.PushProduction, UpdatedAt: when}
}

func deviceTokens(ds []core.Device) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Token
	}
	return out
}

func testDevices(t *testing.T, s core.Store) {
	ctx := context.Background()
	alice := core.AgentDevices(1)
	visitor := core.IdentityDevices("web", "u:42")

	t.Run("register and list", func(t *testing.T) {
		d, err := s.RegisterDevice(ctx, device(1, alice, at(time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		if d.Token != deviceToken(1) || d.Owner != alice || d.Topic != "com.example.app" || d.Environment != core.PushProduction {
			t.Errorf("stored %+v", d)
		}
		equalTime(t, "created_at", d.CreatedAt, at(time.Second))
		equalTime(t, "updated_at", d.UpdatedAt, at(time.Second))
		if _, err := s.RegisterDevice(ctx, device(2, alice, at(2*time.Second))); err != nil {
			t.Fatal(err)
		}
		got, err := s.Devices(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{deviceToken(2), deviceToken(1)}; strings.Join(deviceTokens(got), ",") != strings.Join(want, ",") {
			t.Errorf("Devices = %v, want newest first %v", deviceTokens(got), want)
		}
		none, err := s.Devices(ctx, core.AgentDevices(99))
		if err != nil || len(none) != 0 {
			t.Errorf("Devices(nobody) = %v, %v; want none", none, err)
		}
	})

	t.Run("re-registering keeps created_at", func(t *testing.T) {
		d := device(1, alice, at(2500*time.Millisecond))
		d.Environment = core.PushSandbox
		got, err := s.RegisterDevice(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if got.Owner != alice || got.Environment != core.PushSandbox {
			t.Errorf("re-registered %+v", got)
		}
		equalTime(t, "created_at kept", got.CreatedAt, at(time.Second))
		equalTime(t, "updated_at", got.UpdatedAt, at(2500*time.Millisecond))
	})

	t.Run("the token moves to another owner of the same kind", func(t *testing.T) {
		bob := core.AgentDevices(5)
		d := device(1, bob, at(3*time.Second))
		d.Topic = "com.example.other"
		got, err := s.RegisterDevice(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if got.Owner != bob || got.Topic != "com.example.other" {
			t.Errorf("moved %+v", got)
		}
		equalTime(t, "created_at of the new owner", got.CreatedAt, at(3*time.Second))
		equalTime(t, "updated_at", got.UpdatedAt, at(3*time.Second))
		mine, _ := s.Devices(ctx, alice)
		if len(mine) != 1 || mine[0].Token != deviceToken(2) {
			t.Errorf("alice's devices after the move = %v", deviceTokens(mine))
		}
		theirs, _ := s.Devices(ctx, bob)
		if len(theirs) != 1 || theirs[0].Token != deviceToken(1) {
			t.Errorf("bob's devices after the move = %v", deviceTokens(theirs))
		}
		// Back to alice, for the tests below.
		if _, err := s.RegisterDevice(ctx, device(1, alice, at(3500*time.Millisecond))); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the token never moves between an agent and an identity", func(t *testing.T) {
		wantErr(t, "a visitor takes an agent's token",
			func() error { _, err := s.RegisterDevice(ctx, device(1, visitor, at(4*time.Second))); return err }(), core.ErrConflict)
		if got, _ := s.Devices(ctx, alice); len(got) != 2 {
			t.Errorf("alice's devices after a refused move = %v", deviceTokens(got))
		}
		if got, _ := s.Devices(ctx, visitor); len(got) != 0 {
			t.Errorf("the visitor got %v", deviceTokens(got))
		}
		if _, err := s.RegisterDevice(ctx, device(3, visitor, at(4*time.Second))); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "an agent takes a visitor's token",
			func() error { _, err := s.RegisterDevice(ctx, device(3, alice, at(5*time.Second))); return err }(), core.ErrConflict)
		if got, _ := s.Devices(ctx, visitor); len(got) != 1 {
			t.Errorf("the visitor's devices after a refused move = %v", deviceTokens(got))
		}
	})

	t.Run("remove", func(t *testing.T) {
		wantErr(t, "remove another owner's token", s.RemoveDevice(ctx, deviceToken(3), alice, time.Time{}), core.ErrNotFound)
		wantErr(t, "remove without an owner", s.RemoveDevice(ctx, deviceToken(3), "", time.Time{}), core.ErrInvalid)
		// The provider's refusal of a registration older than the one
		// stored (the app registered again since) removes nothing; of the
		// stored one, removes it.
		got, _ := s.Devices(ctx, visitor)
		if len(got) != 1 {
			t.Fatalf("a refused removal removed the device: %v", deviceTokens(got))
		}
		wantErr(t, "remove an older registration", s.RemoveDevice(ctx, deviceToken(3), visitor, got[0].UpdatedAt.Add(-time.Millisecond)), core.ErrNotFound)
		if err := s.RemoveDevice(ctx, deviceToken(3), visitor, got[0].UpdatedAt); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "remove twice", s.RemoveDevice(ctx, deviceToken(3), visitor, time.Time{}), core.ErrNotFound)
		for _, n := range []int{1, 2} {
			if err := s.RemoveDevice(ctx, deviceToken(n), alice, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
		if got, _ := s.Devices(ctx, alice); len(got) != 0 {
			t.Errorf("devices left: %v", deviceTokens(got))
		}
		wantErr(t, "remove unknown", s.RemoveDevice(ctx, deviceToken(77), alice, time.Time{}), core.ErrNotFound)
	})

	t.Run("oldest dropped beyond the cap", func(t *testing.T) {
		for _, tc := range []struct {
			owner core.DeviceOwner
			max   int
			first int
		}{
			{core.AgentDevices(2), core.MaxDevicesPerAgent, 100},
			{core.IdentityDevices("web", "a:cap"), core.MaxDevicesPerIdentity, 200},
		} {
			for i := range tc.max + 2 {
				if _, err := s.RegisterDevice(ctx, device(tc.first+i, tc.owner, at(time.Duration(10+i)*time.Second))); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.Devices(ctx, tc.owner)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.max {
				t.Fatalf("%s: %d devices kept, want %d", tc.owner, len(got), tc.max)
			}
			for _, d := range got {
				if d.Token == deviceToken(tc.first) || d.Token == deviceToken(tc.first+1) {
					t.Errorf("%s: the oldest registration %s was kept", tc.owner, d.Token)
				}
			}
		}
	})

	t.Run("topic and environment may be left to the pusher", func(t *testing.T) {
		dave := core.AgentDevices(4)
		got, err := s.RegisterDevice(ctx, core.Device{Token: deviceToken(400), Owner: dave, UpdatedAt: at(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if got.Topic != "" || got.Environment != "" {
			t.Errorf("stored %+v, want empty topic and environment", got)
		}
	})

	t.Run("invalid changes nothing", func(t *testing.T) {
		carol := core.AgentDevices(3)
		bad := []struct {
			name string
			d    core.Device
		}{
			{"short token", core.Device{Token: "abcd", Owner: carol, Topic: "com.x", Environment: core.PushSandbox}},
			{"not hex", core.Device{Token: strings.Repeat("zz", 32), Owner: carol, Topic: "com.x", Environment: core.PushSandbox}},
			{"upper-case hex", core.Device{Token: strings.Repeat("AB", 32), Owner: carol, Topic: "com.x", Environment: core.PushSandbox}},
			{"no owner", core.Device{Token: deviceToken(300), Topic: "com.x", Environment: core.PushSandbox}},
			{"bad owner", core.Device{Token: deviceToken(300), Owner: "agent:0", Topic: "com.x", Environment: core.PushSandbox}},
			{"bad topic", core.Device{Token: deviceToken(300), Owner: carol, Topic: "com x", Environment: core.PushSandbox}},
			{"bad environment", core.Device{Token: deviceToken(300), Owner: carol, Topic: "com.x", Environment: "staging"}},
		}
		for _, tc := range bad {
			_, err := s.RegisterDevice(ctx, tc.d)
			wantErr(t, tc.name, err, core.ErrInvalid)
		}
		if got, _ := s.Devices(ctx, carol); len(got) != 0 {
			t.Errorf("invalid registrations stored %v", deviceTokens(got))
		}
	})
}
