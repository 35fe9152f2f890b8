package node

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/kefuhq/kefu/core"
)

// The first run: a fresh deployment gets an admin account to log in to the
// console with, so that `go run ./cmd/kefu` is all it takes to try kefu.

// FirstAdminEmail is the email of the admin account created on first start.
const FirstAdminEmail = "admin@localhost"

// EnsureFirstAdmin creates the deployment's first admin when there is
// none: if no agent in the store is an active admin and the config names
// no admin, it creates the admin FirstAdminEmail with a random password
// and returns the email and the password (a deployment whose config lists
// only agents would otherwise have nobody to manage them). The store keeps only the password's bcrypt
// hash, so this is the one moment it can be shown; the caller shows it to
// the operator once (cmd/kefu prints it to stderr) and nobody logs it.
//
// It returns empty strings when there is nothing to do: the store has an
// active admin, the config names one (it is created instead), or another
// node of the cluster created the account a moment earlier.
func (n *Node) EnsureFirstAdmin(ctx context.Context) (email, password string, err error) {
	for _, a := range n.cfg.Agents {
		if a.Role == string(core.RoleAdmin) {
			return "", "", nil
		}
	}
	agents, err := n.store.Agents(ctx)
	if err != nil {
		return "", "", fmt.Errorf("first admin: %w", err)
	}
	for _, a := range agents {
		if a.Role == core.RoleAdmin && a.Active || a.Email == FirstAdminEmail {
			return "", "", nil
		}
	}
	password = rand.Text() // 26 characters, 130 random bits
	created, err := n.svc.EnsureAgents(ctx, []core.AgentSeed{{
		Email: FirstAdminEmail, Name: "Admin", Password: password, Role: core.RoleAdmin,
	}})
	if err != nil {
		return "", "", fmt.Errorf("first admin: %w", err)
	}
	if len(created) == 0 {
		return "", "", nil // another node was first
	}
	n.log.Info("first start: admin account created", "email", FirstAdminEmail)
	return FirstAdminEmail, password, nil
}

// BaseURL returns the address people reach this node at: server.public_url
// when set, else http:// and the listening address, with localhost for an
// address that listens on every interface or on loopback.
func (n *Node) BaseURL() string {
	if u := strings.TrimRight(n.cfg.Server.PublicURL, "/"); u != "" {
		return u
	}
	host, port, err := net.SplitHostPort(n.ln.Addr().String())
	if err != nil {
		return "http://" + n.ln.Addr().String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() || ip.IsLoopback() {
		host = "localhost"
	}
	if p, err := strconv.Atoi(port); err == nil && p == 80 {
		return "http://" + host
	}
	return "http://" + net.JoinHostPort(host, port)
}
