package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Load reads and parses the config file at path, expanding references to
// the process environment. See Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, os.LookupEnv)
}

// Parse decodes data, the content of the config file filename (used only in
// messages), over the defaults, and validates the result.
//
// Every scalar value may use ${NAME} (an error if NAME is unset),
// ${NAME:-default} (default when NAME is unset or empty) and $$ for a
// literal $; lookupEnv answers for NAME (nil means an empty environment).
// Decoding is strict: unknown keys, duplicate keys and values of the wrong
// type are errors. Keys absent from the file, or given as null, keep their
// defaults. The file's channels: and push: are the instances kefu runs (the
// default web channel of Default is not added to a file).
//
// Every problem is reported: the error is then a *Errors, sorted by line.
func Parse(filename string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	d := &decoder{file: filename, lookup: lookupEnv}
	cfg := defaults(lookupEnv)

	root, err := d.parse(data)
	if err != nil {
		return nil, err
	}
	if root != nil {
		d.value(root, "", reflect.ValueOf(cfg).Elem())
	}
	if cfg.Channels == nil {
		cfg.Channels = map[string]*ChannelInstance{}
	}
	if cfg.Push == nil {
		cfg.Push = map[string]*PusherInstance{}
	}

	// A key that failed to decode kept its default, or is empty; do not
	// pile a validation message on the decoding one. A walk cut short
	// leaves nothing worth validating.
	failed := make([]string, len(d.errs))
	for i, e := range d.errs {
		failed[i] = e.Key
	}
	var invalid error
	if !d.stopped() {
		invalid = cfg.Validate()
	}
	for _, leaf := range leaves(invalid) {
		fe := &FieldError{Msg: leaf.Error()}
		errors.As(leaf, &fe)
		if !underAny(fe.Key, failed) {
			d.errs = append(d.errs, Error{File: filename, Line: lineOf(root, fe.Key), Key: fe.Key, Msg: fe.Msg})
		}
	}
	if len(d.errs) > 0 {
		d.errs.sort()
		d.errs = slices.Compact(d.errs) // an alias decoded twice fails twice
		return nil, &d.errs
	}
	return cfg, nil
}

// underAny reports whether key is one of keys or nested under one.
func underAny(key string, keys []string) bool {
	for _, k := range keys {
		if k == "" {
			continue
		}
		if key == k || strings.HasPrefix(key, k) && (key[len(k)] == '.' || key[len(k)] == '[') {
			return true
		}
	}
	return false
}

// Limits that keep a hostile file (alias and merge bombs, deep nesting)
// cheap. A real config is a few thousand nodes at most.
const (
	maxSteps  = 100_000 // nodes and keys visited, aliases counted each time
	maxDepth  = 64      // nesting of values and merges
	maxErrors = 1_000   // problems reported before giving up
)

// decoder walks a yaml.Node tree into Go values, collecting errors.
type decoder struct {
	file   string
	lookup func(string) (string, bool)
	errs   Errors
	steps  int
	depth  int
}

// yamlLine finds the line in a yaml.v3 syntax error ("yaml: line 3: ...").
var yamlLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?`)

// parse returns the file's top node, or nil for an empty file.
func (d *decoder) parse(data []byte) (root *yaml.Node, err error) {
	defer func() {
		// yaml.v3 turns its own failures into errors; anything else
		// escaping it is a bug there, but is still only a bad file here.
		if r := recover(); r != nil {
			root, err = nil, &Errors{{File: d.file, Msg: fmt.Sprintf("cannot parse YAML: %v", r)}}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, &Errors{d.syntaxError(err)}
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		e := Error{File: d.file, Line: next.Line, Msg: "only one YAML document is allowed"}
		if err != nil {
			e = d.syntaxError(err)
		}
		return nil, &Errors{e}
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		return doc.Content[0], nil
	}
	return nil, nil
}

func (d *decoder) syntaxError(err error) Error {
	msg := err.Error()
	e := Error{File: d.file, Msg: msg}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Msg = "invalid YAML: " + msg[len(m[0]):]
	}
	return e
}

func (d *decoder) errorf(n *yaml.Node, key, format string, args ...any) {
	if d.stopped() {
		return
	}
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, Error{File: d.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
	if len(d.errs) == maxErrors {
		d.errs = append(d.errs, Error{File: d.file, Msg: fmt.Sprintf("too many problems; stopped after %d", maxErrors)})
		d.steps = maxSteps + 1
	}
}

// step counts one node or key visited and reports whether to go on; past
// maxSteps it records one error and stops the walk.
func (d *decoder) step(n *yaml.Node, key string) bool {
	if d.stopped() {
		return false
	}
	if d.steps++; d.steps > maxSteps {
		d.errs = append(d.errs, Error{File: d.file, Line: n.Line, Key: key, Msg: "document too large (too many aliases?)"})
		return false
	}
	return true
}

func (d *decoder) stopped() bool { return d.steps > maxSteps }

var (
	durationType        = reflect.TypeFor[time.Duration]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	defaulterType       = reflect.TypeFor[Defaulter]()
	channelsType        = reflect.TypeFor[map[string]*ChannelInstance]()
	pushType            = reflect.TypeFor[map[string]*PusherInstance]()
)

// value decodes n into v, which must be settable; key is n's path for messages.
func (d *decoder) value(n *yaml.Node, key string, v reflect.Value) {
	n = resolve(n)
	if !d.step(n, key) {
		return
	}
	if d.depth >= maxDepth {
		d.errorf(n, key, "nested too deeply (an alias inside itself?)")
		d.steps = maxSteps + 1
		return
	}
	d.depth++
	defer func() { d.depth-- }()

	if isNull(n) {
		// Null leaves a default alone and empties what can be empty.
		switch v.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface:
			v.SetZero()
		}
		return
	}
	t := v.Type()
	switch {
	case t == channelsType:
		d.channels(n, key, v)
		return
	case t == pushType:
		d.pushers(n, key, v)
		return
	case t == durationType:
		s, ok := d.scalar(n, key, "a duration")
		if !ok {
			return
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			hint := ""
			if strings.HasSuffix(s, "d") {
				hint = " (there is no day unit: 7 days is 168h)"
			}
			d.errorf(n, key, "expected a duration like \"90s\", \"5m\" or \"168h\", got %q%s", clip(s), hint)
			return
		}
		v.SetInt(int64(dur))
		return
	case t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(textUnmarshalerType):
		s, ok := d.scalar(n, key, "a string")
		if !ok {
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			d.errorf(n, key, "%v", err)
		}
		return
	}

	switch v.Kind() {
	case reflect.Pointer:
		// Decode into a copy, so a default pointing at shared data is
		// never written through.
		p := newValue(t.Elem())
		if !v.IsNil() {
			p.Elem().Set(v.Elem())
		}
		d.value(n, key, p.Elem())
		v.Set(p)
	case reflect.Struct:
		d.mapping(n, key, fieldsOf(v))
	case reflect.Slice:
		d.list(n, key, v)
	case reflect.Map:
		d.dict(n, key, v)
	case reflect.String:
		if s, ok := d.scalar(n, key, "a string"); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		s, ok := d.scalar(n, key, "true or false")
		if !ok {
			return
		}
		switch s {
		case "true", "True", "TRUE":
			v.SetBool(true)
		case "false", "False", "FALSE":
			v.SetBool(false)
		default:
			d.errorf(n, key, "expected true or false, got %q", clip(s))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		s, ok := d.scalar(n, key, "an integer")
		if !ok {
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, t.Bits())
		if err != nil {
			d.numberError(n, key, "an integer", s, err)
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		s, ok := d.scalar(n, key, "a non-negative integer")
		if !ok {
			return
		}
		u, err := strconv.ParseUint(strings.ReplaceAll(s, "_", ""), 10, t.Bits())
		if err != nil {
			d.numberError(n, key, "a non-negative integer", s, err)
			return
		}
		v.SetUint(u)
	case reflect.Float32, reflect.Float64:
		s, ok := d.scalar(n, key, "a number")
		if !ok {
			return
		}
		f, err := strconv.ParseFloat(s, t.Bits())
		if err != nil {
			d.numberError(n, key, "a number", s, err)
			return
		}
		v.SetFloat(f)
	default:
		d.errorf(n, key, "cannot decode into Go type %s", t)
	}
}

func (d *decoder) numberError(n *yaml.Node, key, want, s string, err error) {
	if errors.Is(err, strconv.ErrRange) {
		d.errorf(n, key, "%s is out of range", clip(s))
		return
	}
	d.errorf(n, key, "expected %s, got %q", want, clip(s))
}

// newValue returns a pointer to a new T, with its defaults if it has any.
func newValue(t reflect.Type) reflect.Value {
	p := reflect.New(t)
	if t.Kind() != reflect.Pointer && p.Type().Implements(defaulterType) {
		p.Interface().(Defaulter).SetDefaults()
	}
	return p
}

// scalar returns n's text with environment references expanded, or reports
// that n is not a scalar (want says what was expected).
func (d *decoder) scalar(n *yaml.Node, key, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, key, "expected %s, got %s", want, describe(n))
		return "", false
	}
	s, err := expand(n.Value, d.lookup)
	if err != nil {
		d.errorf(n, key, "%v", err)
		return "", false
	}
	return s, true
}

// list decodes a sequence into slice v, replacing its contents.
func (d *decoder) list(n *yaml.Node, key string, v reflect.Value) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, key, "expected a list, got %s", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		e := newValue(v.Type().Elem()).Elem()
		d.value(item, key+"["+strconv.Itoa(i)+"]", e)
		s.Index(i).Set(e)
	}
	v.Set(s)
}

// dict decodes a mapping into map v (string keys only), replacing its contents.
func (d *decoder) dict(n *yaml.Node, key string, v reflect.Value) {
	t := v.Type()
	if t.Key().Kind() != reflect.String {
		d.errorf(n, key, "cannot decode into Go type %s", t)
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, key, "expected a mapping, got %s", describe(n))
		return
	}
	m := reflect.MakeMap(t)
	d.pairs(n, key, func(k, val *yaml.Node, path string) {
		e := newValue(t.Elem()).Elem()
		d.value(val, path, e)
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), e)
	})
	v.Set(m)
}

// field is one key of a struct: its yaml name and its settable value.
type field struct {
	name string
	v    reflect.Value
}

// fieldsOf lists the keys of struct v: the yaml tag's name, else the
// lowercased field name; `yaml:"-"` and unexported fields are skipped and
// `yaml:",inline"` structs are flattened.
func fieldsOf(v reflect.Value) []field {
	var out []field
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(","+opts+",", ",inline,") && sf.Type.Kind() == reflect.Struct && (sf.IsExported() || sf.Anonymous) {
			// An embedded struct's exported fields are settable even when
			// its type is not exported.
			out = append(out, fieldsOf(v.Field(i))...)
			continue
		}
		if !sf.IsExported() || tag == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		out = append(out, field{name, v.Field(i)})
	}
	return out
}

// mapping decodes mapping n into fields: unknown keys are errors.
func (d *decoder) mapping(n *yaml.Node, key string, fields []field) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, key, "expected a mapping, got %s", describe(n))
		return
	}
	d.pairs(n, key, func(k, val *yaml.Node, path string) {
		for _, f := range fields {
			if f.name == k.Value {
				d.value(val, path, f.v)
				return
			}
		}
		names := make([]string, len(fields))
		for i, f := range fields {
			names[i] = f.name
		}
		d.errorf(k, path, "unknown key%s", suggest(k.Value, names))
	})
}

// pairs calls fn for each key of mapping n, merged ones (<<: *anchor) first
// so that the mapping's own keys win, and reports duplicate and non-string keys.
func (d *decoder) pairs(n *yaml.Node, key string, fn func(k, v *yaml.Node, path string)) {
	seen := map[string]int{}
	for _, merge := range []bool{true, false} {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := resolve(n.Content[i]), n.Content[i+1]
			if isMerge(k) != merge {
				continue
			}
			if !d.step(k, key) {
				return
			}
			if merge {
				d.merge(val, key, fn)
				continue
			}
			if k.Kind != yaml.ScalarNode {
				d.errorf(k, key, "keys must be strings, got %s", describe(k))
				continue
			}
			path := joinKey(key, k.Value)
			if first, dup := seen[k.Value]; dup {
				d.errorf(k, path, "duplicate key (first at line %d)", first)
				continue
			}
			seen[k.Value] = k.Line
			fn(k, val, path)
		}
	}
}

// merge decodes the mapping, or list of mappings, of a merge key.
func (d *decoder) merge(val *yaml.Node, key string, fn func(k, v *yaml.Node, path string)) {
	if d.depth >= maxDepth {
		d.errorf(val, key, "nested too deeply (an alias inside itself?)")
		d.steps = maxSteps + 1
		return
	}
	d.depth++
	defer func() { d.depth-- }()
	val = resolve(val)
	switch val.Kind {
	case yaml.MappingNode:
		d.pairs(val, key, fn)
	case yaml.SequenceNode:
		for _, m := range val.Content {
			if m = resolve(m); m.Kind == yaml.MappingNode {
				d.pairs(m, key, fn)
			} else {
				d.errorf(m, key, "<< must merge a mapping, got %s", describe(m))
			}
		}
	default:
		d.errorf(val, key, "<< must merge a mapping, got %s", describe(val))
	}
}

// instance is a decoded entry of channels: or push:.
type instance struct {
	name, typ string
	enabled   bool
	section   Section
	line      int
}

func (d *decoder) channels(n *yaml.Node, key string, v reflect.Value) {
	m := map[string]*ChannelInstance{}
	for _, in := range d.instances(n, key, channelRegistry) {
		m[in.name] = &ChannelInstance{Name: in.name, Type: in.typ, Enabled: in.enabled, Config: in.section, Line: in.line}
	}
	v.Set(reflect.ValueOf(m))
}

func (d *decoder) pushers(n *yaml.Node, key string, v reflect.Value) {
	m := map[string]*PusherInstance{}
	for _, in := range d.instances(n, key, pusherRegistry) {
		m[in.name] = &PusherInstance{Name: in.name, Type: in.typ, Enabled: in.enabled, Config: in.section, Line: in.line}
	}
	v.Set(reflect.ValueOf(m))
}

// instances decodes channels: or push:. Each key is an instance name; its
// mapping has the common keys type (default: the name) and enabled
// (default false), and the registered type's own keys.
func (d *decoder) instances(n *yaml.Node, key string, reg *registry) []instance {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, key, "expected a mapping, got %s", describe(n))
		return nil
	}
	var out []instance
	d.pairs(n, key, func(k, val *yaml.Node, path string) {
		if !instanceName.MatchString(k.Value) {
			d.errorf(k, path, "name must match %s (lowercase letters, digits, _ and -)", instanceName)
			return
		}
		val = resolve(val)
		if isNull(val) {
			val = &yaml.Node{Kind: yaml.MappingNode, Line: k.Line, Column: k.Column}
		}
		if val.Kind != yaml.MappingNode {
			d.errorf(val, path, "expected a mapping, got %s", describe(val))
			return
		}
		in := instance{name: k.Value, typ: k.Value, line: k.Line}
		at, atKey := k, path
		if _, tv := findKey(val, "type"); tv != nil {
			s, ok := d.scalar(resolve(tv), path+".type", "a string")
			if !ok {
				return
			}
			in.typ, at, atKey = s, resolve(tv), path+".type"
		}
		newConfig, ok := reg.lookup(in.typ)
		if !ok {
			known := "none are registered"
			if ts := reg.types(); len(ts) > 0 {
				known = "known: " + strings.Join(ts, ", ")
			}
			d.errorf(at, atKey, "unknown %s type %q (%s)", reg.kind, clip(in.typ), known)
			return
		}
		in.section = newConfig()
		var typ string // decoded again with the rest, only to claim the key
		fields := append([]field{
			{"type", reflect.ValueOf(&typ).Elem()},
			{"enabled", reflect.ValueOf(&in.enabled).Elem()},
		}, fieldsOf(reflect.ValueOf(in.section).Elem())...)
		d.mapping(val, path, fields)
		out = append(out, in)
	})
	return out
}

// findKey returns the key and value of name in mapping n, looking in
// merged mappings too; nil if absent.
func findKey(n *yaml.Node, name string) (k, v *yaml.Node) {
	budget := 10_000 // mappings looked into, against merge bombs
	return findKeyIn(n, name, &budget)
}

func findKeyIn(n *yaml.Node, name string, budget *int) (k, v *yaml.Node) {
	n = resolve(n)
	if *budget--; n == nil || n.Kind != yaml.MappingNode || *budget < 0 {
		return nil, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := resolve(n.Content[i]); k.Kind == yaml.ScalarNode && !isMerge(k) && k.Value == name {
			return k, n.Content[i+1]
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !isMerge(resolve(n.Content[i])) {
			continue
		}
		m := resolve(n.Content[i+1])
		ms := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			ms = m.Content
		}
		for _, m := range ms {
			if k, v := findKeyIn(m, name, budget); v != nil {
				return k, v
			}
		}
	}
	return nil, nil
}

// lineOf returns the line of the dotted key path in the tree under root:
// the line of the last key found, or 0 when not even the first is present.
func lineOf(root *yaml.Node, path string) int {
	n, line := root, 0
	for _, seg := range splitKey(path) {
		n = resolve(n)
		if n == nil {
			break
		}
		if strings.HasPrefix(seg, "[") {
			i, err := strconv.Atoi(seg[1 : len(seg)-1])
			if n.Kind != yaml.SequenceNode || err != nil || i < 0 || i >= len(n.Content) {
				break
			}
			n = n.Content[i]
			line = resolve(n).Line
			continue
		}
		k, v := findKey(n, seg)
		if v == nil {
			break
		}
		n, line = v, k.Line
	}
	return line
}

// splitKey splits "agents[1].email" into "agents", "[1]", "email".
func splitKey(path string) []string {
	var segs []string
	for _, part := range strings.Split(path, ".") {
		for part != "" {
			i := strings.IndexByte(part[1:], '[') + 1
			if i == 0 {
				i = len(part)
			}
			segs = append(segs, part[:i])
			part = part[i:]
		}
	}
	return segs
}

// resolve follows aliases to the node they stand for.
func resolve(n *yaml.Node) *yaml.Node {
	for range maxDepth {
		if n == nil || n.Kind != yaml.AliasNode || n.Alias == nil {
			return n
		}
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge"
}

// describe names what n is, for "expected X, got Y".
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(clip(n.Value))
	}
	return "nothing"
}

// suggest returns ` (did you mean "x"?)` for the known name closest to
// name, if one is within two edits, and "" otherwise.
func suggest(name string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if dist := editDistance(strings.ToLower(name), k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b))
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
