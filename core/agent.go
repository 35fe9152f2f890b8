package core

import (
	"fmt"
	"sync"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

// The shortest password kefu accepts for an agent, and the longest (bcrypt
// reads no further).
const (
	MinPasswordLength = 8
	MaxPasswordBytes  = 72
)

// PasswordProblem says what is wrong with password as an agent's
// password, or "": it has at least MinPasswordLength characters (three CJK
// ones are nine bytes, and not enough) and at most MaxPasswordBytes bytes
// (bcrypt's limit).
func PasswordProblem(password string) string {
	switch {
	case utf8.RuneCountInString(password) < MinPasswordLength:
		return fmt.Sprintf("must have at least %d characters", MinPasswordLength)
	case len(password) > MaxPasswordBytes:
		return fmt.Sprintf("must be at most %d bytes", MaxPasswordBytes)
	}
	return ""
}

// HashPassword returns the bcrypt hash of an agent's password.
func HashPassword(password string) (string, error) {
	if p := PasswordProblem(password); p != "" {
		return "", fmt.Errorf("%w: the password %s", ErrInvalid, p)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// CheckPassword reports whether password matches the agent's hash. It takes
// the same time whether the hash is empty (a missing agent) or not, so that
// login timing does not tell which emails exist.
func (a Agent) CheckPassword(password string) bool {
	hash := a.PasswordHash
	if hash == "" {
		hash = dummyHash()
	}
	ok := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
	return ok && a.PasswordHash != ""
}

// dummyHash is compared against when there is no agent, to spend the same time.
var dummyHash = sync.OnceValue(func() string {
	h, _ := bcrypt.GenerateFromPassword([]byte("kefu-no-such-agent"), bcrypt.DefaultCost)
	return string(h)
})
