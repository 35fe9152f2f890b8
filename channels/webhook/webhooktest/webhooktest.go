// Package webhooktest is a fake receiver for the webhook channel: an HTTP
// server standing in for deliver_url that checks signatures, records what
// kefu delivers, and fails on demand. It also signs and posts inbound
// messages the way a real sender would.
package webhooktest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"

	"github.com/kefuhq/kefu/channels/webhook"
)

// Delivery is one request kefu made to the receiver.
type Delivery struct {
	webhook.Outbound
	At     time.Time
	Status int // what the receiver answered
}

// Receiver is a fake deliver_url.
type Receiver struct {
	*httptest.Server
	secret string

	mu       sync.Mutex
	got      []Delivery
	failures []int         // statuses to answer next, in order (then 200)
	retry    int           // Retry-After seconds sent with 429
	block    chan struct{} // while non-nil, requests wait for it to close
	arrived  chan struct{}
}

// NewReceiver starts a receiver checking signatures with secret.
func NewReceiver(secret string) *Receiver {
	r := &Receiver{secret: secret, arrived: make(chan struct{}, 1<<16)}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	return r
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, "read", http.StatusBadRequest)
		return
	}
	if err := webhook.Verify(r.secret, req.Header, body, time.Now()); err != nil {
		http.Error(w, "bad signature: "+err.Error(), http.StatusUnauthorized)
		return
	}
	var out webhook.Outbound
	if err := json.Unmarshal(body, &out); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	block := r.block
	r.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-req.Context().Done():
		}
		// Both may be ready at once: a request whose client has gone (a
		// killed kefu) was not delivered, whatever select picked.
		if req.Context().Err() != nil {
			return
		}
	}
	r.mu.Lock()
	status := http.StatusOK
	if len(r.failures) > 0 {
		status, r.failures = r.failures[0], r.failures[1:]
	}
	r.got = append(r.got, Delivery{Outbound: out, At: time.Now(), Status: status})
	retry := r.retry
	r.mu.Unlock()
	select {
	case r.arrived <- struct{}{}:
	default:
	}
	switch status {
	case http.StatusOK:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"ext-%d"}`, out.MessageID)
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", strconv.Itoa(retry))
		http.Error(w, "slow down", status)
	default:
		http.Error(w, http.StatusText(status), status)
	}
}

// FailNext makes the next len(statuses) deliveries answer those statuses.
// With 429, retryAfter seconds go in Retry-After.
func (r *Receiver) FailNext(retryAfter int, statuses ...int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, statuses...)
	r.retry = retryAfter
}

// Block makes deliveries wait until Unblock.
func (r *Receiver) Block() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.block == nil {
		r.block = make(chan struct{})
	}
}

// Unblock lets waiting and later deliveries through.
func (r *Receiver) Unblock() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.block != nil {
		close(r.block)
		r.block = nil
	}
}

// Deliveries returns every delivery so far, answered or not.
func (r *Receiver) Deliveries() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Delivery(nil), r.got...)
}

// Delivered returns the deliveries answered 200.
func (r *Receiver) Delivered() []Delivery {
	var ok []Delivery
	for _, d := range r.Deliveries() {
		if d.Status == http.StatusOK {
			ok = append(ok, d)
		}
	}
	return ok
}

// WaitDelivered waits until at least n deliveries were answered 200, or the
// timeout passes; it returns them.
func (r *Receiver) WaitDelivered(n int, timeout time.Duration) []Delivery {
	deadline := time.After(timeout)
	for {
		if d := r.Delivered(); len(d) >= n {
			return d
		}
		select {
		case <-r.arrived:
		case <-deadline:
			return r.Delivered()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Post signs in with secret and posts it to url (a /webhooks/NAME endpoint).
func Post(client *http.Client, url, secret string, in webhook.Inbound) (*http.Response, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	return PostRaw(client, url, secret, body)
}

// PostRaw signs body with secret and posts it to url.
func PostRaw(client *http.Client, url, secret string, body []byte) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	webhook.Sign(secret, req.Header, body, time.Now())
	return client.Do(req)
}
