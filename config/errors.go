package config

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem in a config file.
type Error struct {
	File string // file name as given to Parse; may be empty
	Line int    // 1-based line, or 0 when the problem has no place in the file
	Key  string // dotted key path such as "routing.reopen_within" or "agents[0].email"; empty for syntax errors
	Msg  string // what is wrong
}

// Error formats e as FILE:LINE: KEY: MSG, leaving out the parts that are unknown.
func (e Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		b.WriteString("line " + strconv.Itoa(e.Line) + ": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a config file, sorted by line and then key.
// Parse and Load return a *Errors for anything wrong with the file's content,
// so a caller can print one problem per line:
//
//	var errs *config.Errors
//	if errors.As(err, &errs) {
//		for _, e := range *errs {
//			fmt.Println(e)
//		}
//	}
type Errors []Error

// Error returns the problems, one per line.
func (e *Errors) Error() string {
	lines := make([]string, len(*e))
	for i, x := range *e {
		lines[i] = x.Error()
	}
	return strings.Join(lines, "\n")
}

// sort orders the problems by line, then key, keeping equal ones in the order found.
func (e Errors) sort() {
	slices.SortStableFunc(e, func(a, b Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Key, b.Key))
	})
}

// FieldError is a problem with one key of a section, returned by Validate
// methods. Key is relative to the section and dotted for nesting
// ("templates.reopen.name", "allowed_origins[1]"); the loader prefixes the
// section's path and finds the key's line. Return several with errors.Join.
type FieldError struct {
	Key string // key inside the section; empty means the section itself
	Msg string // what is wrong, e.g. "required when the channel is enabled"
	// OnlyEnabled marks a problem only for an instance that runs (a
	// missing secret, a key file not in place yet): a disabled channel or
	// pusher is checked for every other problem (MarkOnlyEnabled).
	OnlyEnabled bool
}

// Error formats the problem as KEY: MSG.
func (e *FieldError) Error() string {
	if e.Key == "" {
		return e.Msg
	}
	return e.Key + ": " + e.Msg
}

// Errorf returns a *FieldError for key with a formatted message.
func Errorf(key, format string, args ...any) error {
	return &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Required returns a *FieldError if value is empty, and nil otherwise.
// Channel sections use it for secrets, which are required only when the
// instance is enabled (OnlyEnabled; a pusher may prefer
// MarkOnlyEnabled(Errorf(…)), as the message says channel).
func Required(key, value string) error {
	if value == "" {
		return &FieldError{Key: key, Msg: "required when the channel is enabled", OnlyEnabled: true}
	}
	return nil
}

// MarkOnlyEnabled marks every *FieldError in err as a problem only for an
// enabled instance (FieldError.OnlyEnabled), and returns err.
func MarkOnlyEnabled(err error) error {
	for _, leaf := range leaves(err) {
		var fe *FieldError
		if errors.As(leaf, &fe) {
			fe.OnlyEnabled = true
		}
	}
	return err
}

// dropOnlyEnabled returns err without the problems marked OnlyEnabled: what
// is wrong with a disabled instance.
func dropOnlyEnabled(err error) error {
	var out []error
	for _, leaf := range leaves(err) {
		var fe *FieldError
		if errors.As(leaf, &fe) && fe.OnlyEnabled {
			continue
		}
		out = append(out, leaf)
	}
	return errors.Join(out...)
}

// OneOf returns a *FieldError unless value is one of allowed.
func OneOf(key, value string, allowed ...string) error {
	if slices.Contains(allowed, value) {
		return nil
	}
	return &FieldError{Key: key, Msg: fmt.Sprintf("must be one of %s; got %q", strings.Join(allowed, ", "), value)}
}

// URL returns a *FieldError unless value is an absolute http or https URL
// with a host. An empty value is an error too; check optional URLs only when set.
func URL(key, value string) error {
	if value == "" {
		return &FieldError{Key: key, Msg: "required: an http:// or https:// URL"}
	}
	u, err := url.Parse(value)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &FieldError{Key: key, Msg: fmt.Sprintf("must be an absolute http:// or https:// URL; got %q", value)}
	}
	return nil
}

// Prefix returns err with every *FieldError's key placed under prefix, for
// a section that validates a nested struct: Prefix("templates.reopen",
// t.Validate()). Other errors become a *FieldError on prefix itself.
// Joined errors stay joined (text wrapped around a joined error is
// dropped: the key says where); Prefix(p, nil) is nil.
func Prefix(prefix string, err error) error {
	var out []error
	for _, leaf := range leaves(err) {
		var fe *FieldError
		if errors.As(leaf, &fe) {
			out = append(out, &FieldError{Key: joinKey(prefix, fe.Key), Msg: fe.Msg, OnlyEnabled: fe.OnlyEnabled})
		} else {
			out = append(out, &FieldError{Key: prefix, Msg: leaf.Error()})
		}
	}
	return errors.Join(out...)
}

// leaves flattens err: joined errors (errors.Join, fmt.Errorf with several
// %w) are split, wrapping is looked through until a *FieldError or a joined
// error is found, and anything else is one leaf.
func leaves(err error) []error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if _, ok := e.(*FieldError); ok {
			return []error{e}
		}
		if m, ok := e.(interface{ Unwrap() []error }); ok {
			var out []error
			for _, x := range m.Unwrap() {
				out = append(out, leaves(x)...)
			}
			return out
		}
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

// joinKey appends key to the dotted path prefix.
func joinKey(prefix, key string) string {
	switch {
	case prefix == "":
		return key
	case key == "":
		return prefix
	case key[0] == '[':
		return prefix + key
	}
	return prefix + "." + key
}
