package web

import (
	"net/netip"
	"sync"
	"time"
)

// loginThrottle limits failed logins per account and per client address
// within a sliding window (limits.login_failures_per_account and
// limits.login_failures_per_ip within limits.login_window). Once a key has
// had its number of failures in the last window, every login for it is
// refused, with the right password too, until the oldest of those failures
// leaves the window.
//
// It is not httpx.Limiter: a token bucket refills on its own and counts
// every request, while this counts only failures and blocks until they age
// out. An attempt is counted as a failure when it starts (begin) and
// forgiven if it succeeds, so concurrent guesses cannot slip past the limit
// while their passwords are being checked. A success forgives the account's
// failures but not the address's: logging in to one's own account does not
// buy an address more guesses at others.
//
// The state is per node; clustered, each node allows its own share.
// Memory is bounded by the keys that failed within the last window, which
// bcrypt's cost per attempt bounds in turn. Safe for concurrent use.
type loginThrottle struct {
	perAccount, perIP int
	window            time.Duration
	now               func() time.Time

	mu       sync.Mutex
	accounts map[string][]time.Time // account → start times of counted attempts, oldest first
	ips      map[string][]time.Time
	swept    time.Time
}

func newLoginThrottle(perAccount, perIP int, window time.Duration) *loginThrottle {
	return &loginThrottle{
		perAccount: perAccount, perIP: perIP, window: window, now: time.Now,
		accounts: map[string][]time.Time{}, ips: map[string][]time.Time{},
	}
}

// loginAttempt is one login attempt being checked.
type loginAttempt struct {
	account, ip string
	at          time.Time
}

// begin counts a login attempt for account and ip as a failure until told
// otherwise. When either key is over its limit it counts nothing and
// returns how long until an attempt would be allowed.
func (l *loginThrottle) begin(account, ip string) (loginAttempt, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > l.window {
		l.sweepLocked(now)
	}
	wait := max(l.waitLocked(l.accounts, account, l.perAccount, now), l.waitLocked(l.ips, ip, l.perIP, now))
	if wait > 0 {
		return loginAttempt{}, wait
	}
	l.accounts[account] = append(l.accounts[account], now)
	l.ips[ip] = append(l.ips[ip], now)
	return loginAttempt{account: account, ip: ip, at: now}, 0
}

// waitLocked drops key's failures older than the window and returns how
// long until it may try again (0: now).
func (l *loginThrottle) waitLocked(m map[string][]time.Time, key string, limit int, now time.Time) time.Duration {
	ts := m[key]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= l.window {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(m, key)
		return 0
	}
	m[key] = ts
	if len(ts) < limit {
		return 0
	}
	return ts[len(ts)-limit].Add(l.window).Sub(now)
}

// succeeded forgives the attempt and every failure of its account.
func (l *loginThrottle) succeeded(a loginAttempt) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.accounts, a.account)
	l.forgetLocked(l.ips, a.ip, a.at)
}

// abandon forgives an attempt that was neither a success nor a failure (the
// store could not be read).
func (l *loginThrottle) abandon(a loginAttempt) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forgetLocked(l.accounts, a.account, a.at)
	l.forgetLocked(l.ips, a.ip, a.at)
}

func (l *loginThrottle) forgetLocked(m map[string][]time.Time, key string, at time.Time) {
	ts := m[key]
	for i := len(ts) - 1; i >= 0; i-- {
		if ts[i].Equal(at) {
			ts = append(ts[:i], ts[i+1:]...)
			break
		}
	}
	if len(ts) == 0 {
		delete(m, key)
		return
	}
	m[key] = ts
}

// sweep forgets keys whose failures have all left the window.
func (l *loginThrottle) sweep() {
	now := l.now()
	l.mu.Lock()
	l.sweepLocked(now)
	l.mu.Unlock()
}

func (l *loginThrottle) sweepLocked(now time.Time) {
	for _, m := range []map[string][]time.Time{l.accounts, l.ips} {
		for k, ts := range m {
			if now.Sub(ts[len(ts)-1]) >= l.window {
				delete(m, k)
			}
		}
	}
	l.swept = now
}

// ipKey is the key of a client address in the login throttle and the
// visitor limits: the address itself for IPv4, its /64 for IPv6 (one host
// commonly holds a whole /64, and would otherwise get around every limit
// by changing address).
func ipKey(a netip.Addr) string {
	if a.Is6() && !a.Is4In6() {
		p, err := a.Prefix(64)
		if err == nil {
			return p.String()
		}
	}
	return a.String()
}
