package web

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
)

// Devices: a mobile app registers its APNs device token so that kefu can
// push what its socket missed (package push, docs/push.md). Agents register
// under /api/v1/devices with their bearer token; visitors (a customer's
// app) under /api/v1/visitor/devices with their visitor token, for their
// identity on this channel instance. Tokens are kept in the store, so every
// node knows them.
//
// Visitors cost nothing to create, so their registrations are held to what
// a customer's app needs: a topic of the deployment's own app (the enabled
// pushers' topics), an identity that has written at least once (before
// that nobody can write to it, so there is nothing to push), and
// core.MaxDevicesPerIdentity devices. A token never moves between an agent
// and a visitor (core.DeviceStore.RegisterDevice).

const (
	pathVisitorDevices = "/api/v1/visitor/devices"
	pathVisitorDevice  = "/api/v1/visitor/devices/{token}"
	maxDeviceBody      = apiMaxSmallBody // docs/api.md: any body but a message 16 KiB
)

// deviceRequest is the body of a device registration.
type deviceRequest struct {
	// Token is the APNs device token, as hex.
	Token string `json:"token"`
	// Topic is the app's bundle id; empty: push.apns.topic.
	Topic string `json:"topic,omitempty"`
	// Environment is production or sandbox; empty: push.apns.environment.
	Environment core.PushEnvironment `json:"environment,omitempty"`
}

func (d *deviceRequest) validate() error {
	tok, err := core.NormalizeDeviceToken(d.Token)
	if err != nil {
		return httpx.BadRequest("token must be the APNs device token as %d to %d hex digits", 2*core.MinDeviceTokenBytes, 2*core.MaxDeviceTokenBytes)
	}
	d.Token = tok
	if d.Topic != "" && !core.ValidTopic(d.Topic) {
		return httpx.BadRequest("topic must be the app's bundle id (letters, digits, '.', '-', '_'; at most %d bytes)", core.MaxDeviceTopic)
	}
	if !d.Environment.Valid() {
		return httpx.BadRequest("environment must be production or sandbox, got %q", d.Environment)
	}
	return nil
}

// deviceView is a device as the API shows it.
type deviceView struct {
	Token       string               `json:"token"`
	Topic       string               `json:"topic"`
	Environment core.PushEnvironment `json:"environment"`
	CreatedAt   *time.Time           `json:"created_at"`
	UpdatedAt   *time.Time           `json:"updated_at"`
}

func viewDevice(d core.Device) deviceView {
	return deviceView{Token: d.Token, Topic: d.Topic, Environment: d.Environment,
		CreatedAt: apiTime(d.CreatedAt), UpdatedAt: apiTime(d.UpdatedAt)}
}

var (
	errNoDevice   = &httpx.RequestError{Status: http.StatusNotFound, Code: httpx.CodeNotFound, Msg: "no such device"}
	errDeviceKind = &httpx.RequestError{Status: http.StatusConflict, Code: httpx.CodeConflict,
		Msg: "this device token is registered to another kind of account (agent or customer)"}
	errNoConversation = &httpx.RequestError{Status: http.StatusConflict, Code: httpx.CodeConflict,
		Msg: "register the device after the visitor's first message: an identity without a conversation gets no pushes"}
)

// pathDeviceToken reads the {token} path segment.
func pathDeviceToken(r *http.Request) (string, error) {
	tok, err := core.NormalizeDeviceToken(r.PathValue("token"))
	if err != nil {
		return "", httpx.BadRequest("the path must end with the device token as hex digits")
	}
	return tok, nil
}

// checkTopic refuses a device topic that no pusher would push. topics are
// the enabled pushers' apps. A visitor's device may name only one of them:
// an arbitrary topic would aim pushes at another app of the same Apple
// team, and its DeviceTokenNotForTopic answer would remove the token. An
// agent's may name any app of the team while one pusher serves them all;
// with several pushers (one per app) every device names its app, or none
// would know it for its own.
func checkTopic(topic string, topics []string, visitor bool) error {
	switch {
	case len(topics) > 1 && topic == "":
		return httpx.BadRequest("topic is required: this deployment pushes for several apps (%s); send your app's bundle id", strings.Join(topics, ", "))
	case len(topics) > 1 && !slices.Contains(topics, topic):
		return httpx.BadRequest("topic must be one of this deployment's apps (%s)", strings.Join(topics, ", "))
	case visitor && topic != "" && len(topics) == 0:
		return httpx.BadRequest("topic: push is not enabled on this deployment; leave topic out")
	case visitor && topic != "" && !slices.Contains(topics, topic):
		return httpx.BadRequest("topic must be this deployment's app (%s), or left out", strings.Join(topics, ", "))
	}
	return nil
}

// registerDevice stores req's device for owner and answers it.
func registerDevice(w http.ResponseWriter, r *http.Request, st core.Store, owner core.DeviceOwner, req deviceRequest) error {
	d, err := st.RegisterDevice(r.Context(), core.Device{Token: req.Token, Owner: owner, Topic: req.Topic, Environment: req.Environment})
	if errors.Is(err, core.ErrConflict) {
		return errDeviceKind
	}
	if err != nil {
		return err
	}
	httpx.JSON(w, http.StatusOK, viewDevice(d))
	return nil
}

// removeDevice deletes owner's device named by the path.
func removeDevice(w http.ResponseWriter, r *http.Request, st core.Store, owner core.DeviceOwner) error {
	tok, err := pathDeviceToken(r)
	if err != nil {
		return err
	}
	if err := st.RemoveDevice(r.Context(), tok, owner, time.Time{}); err != nil {
		if errors.Is(err, core.ErrNotFound) {
			return errNoDevice
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Agents: POST /api/v1/devices, GET /api/v1/devices,
// DELETE /api/v1/devices/{token}.

func (a *api) postDevice(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	req, err := apiDecode[deviceRequest](w, r, maxDeviceBody)
	if err != nil {
		return err
	}
	if err := checkTopic(req.Topic, a.c.deps.PushTopics, false); err != nil {
		return err
	}
	return registerDevice(w, r, a.store, core.AgentDevices(me.ID), req)
}

func (a *api) listDevices(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	ds, err := a.store.Devices(r.Context(), core.AgentDevices(me.ID))
	if err != nil {
		return err
	}
	out := struct {
		Devices []deviceView `json:"devices"`
	}{Devices: make([]deviceView, len(ds))}
	for i, d := range ds {
		out.Devices[i] = viewDevice(d)
	}
	httpx.JSON(w, http.StatusOK, out)
	return nil
}

func (a *api) deleteDevice(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	return removeDevice(w, r, a.store, core.AgentDevices(me.ID))
}

// Visitors: POST /api/v1/visitor/devices, DELETE
// /api/v1/visitor/devices/{token}, with the visitor token.

// mountVisitorDevices registers the visitor device routes.
func (rt *realtime) mountVisitorDevices(mux *http.ServeMux) {
	mux.HandleFunc("POST "+pathVisitorDevices, rt.visitorEndpoint(onlyQuery(rt.serveVisitorDevice)))
	mux.HandleFunc("OPTIONS "+pathVisitorDevices, rt.preflight)
	mux.HandleFunc("DELETE "+pathVisitorDevice, rt.visitorEndpoint(onlyQuery(rt.serveVisitorDeviceDelete)))
	mux.HandleFunc("OPTIONS "+pathVisitorDevice, rt.preflight)
	allowOnly(mux, pathVisitorDevices, "POST", "OPTIONS")
	allowOnly(mux, pathVisitorDevice, "DELETE", "OPTIONS")
}

// visitorDevices returns the request's visitor and the owner of their
// devices.
func (rt *realtime) visitorDevices(r *http.Request) (visitor, core.DeviceOwner, error) {
	v, err := rt.parseVisitor(bearerToken(r))
	if err != nil {
		return visitor{}, "", err
	}
	return v, core.IdentityDevices(rt.c.name, v.identity), nil
}

func (rt *realtime) serveVisitorDevice(w http.ResponseWriter, r *http.Request) {
	if err := rt.registerVisitorDevice(w, r); err != nil {
		httpx.FromError(w, rt.log, err)
	}
}

func (rt *realtime) registerVisitorDevice(w http.ResponseWriter, r *http.Request) error {
	v, owner, err := rt.visitorDevices(r)
	if err != nil {
		return err
	}
	body, err := readBody(w, r, maxDeviceBody)
	if err != nil {
		return err
	}
	var req deviceRequest
	if err := httpx.Unmarshal(body, &req); err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	if err := checkTopic(req.Topic, rt.c.deps.PushTopics, true); err != nil {
		return err
	}
	if _, err := rt.newestConversation(r.Context(), v.identity); errors.Is(err, core.ErrNotFound) {
		return errNoConversation
	} else if err != nil {
		return err
	}
	return registerDevice(w, r, rt.store, owner, req)
}

func (rt *realtime) serveVisitorDeviceDelete(w http.ResponseWriter, r *http.Request) {
	// An expired token still removes its identity's device, for another
	// visitor_token_ttl: an app whose visitor session ran out must be able
	// to stop the pushes for it (the signature still proves whose device it
	// is); a token long gone, found in a log, cannot.
	v, exp, err := rt.verifyVisitor(bearerToken(r))
	if err == nil && rt.c.now().Sub(exp) > rt.c.cfg.VisitorTokenTTL {
		err = errVisitorToken
	}
	if err == nil {
		err = removeDevice(w, r, rt.store, core.IdentityDevices(rt.c.name, v.identity))
	}
	if err != nil {
		httpx.FromError(w, rt.log, err)
	}
}
