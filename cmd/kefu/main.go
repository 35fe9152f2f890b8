// Command kefu is the one binary of kefu, the self-hosted multi-channel
// customer-service bridge.
//
//	kefu [serve] [-c FILE]      run a node (the default command)
//	kefu config check -c FILE   check a config file, print every problem, exit 1 if any
//	kefu version                print the version
//	kefu telegram set-webhook -c FILE [--channel NAME]
//	                            register a Telegram channel's webhook with Telegram
//	kefu migrate sqlite-to-postgres -from FILE -to URL [-media DIR] [-force]
//	                            copy a SQLite store's data (and the media folder) into PostgreSQL
//
// With no config file (and no KEFU_CONFIG), kefu serve runs the built-in
// default: the web channel on :8080 with SQLite under ./data.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/kefuhq/kefu/adapters/media/local"
	mediapg "github.com/kefuhq/kefu/adapters/media/postgres"
	"github.com/kefuhq/kefu/adapters/store/postgres"
	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/bench"
	"github.com/kefuhq/kefu/channels/telegram" // also registers the telegram channel type
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/gcfloor"
	"github.com/kefuhq/kefu/media"
	"github.com/kefuhq/kefu/node"

	// Channel types shipped in the binary register themselves.
	_ "github.com/kefuhq/kefu/channels/slack"
	_ "github.com/kefuhq/kefu/channels/web"
	_ "github.com/kefuhq/kefu/channels/webhook"
	_ "github.com/kefuhq/kefu/channels/wechat"
	_ "github.com/kefuhq/kefu/channels/wecom"
	_ "github.com/kefuhq/kefu/channels/whatsapp"
)

// gcFloor is the heap below which a node does not collect garbage
// (internal/gcfloor, docs/operations.md).
const gcFloor = 64 << 20

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		cmd, args = "help", args[1:]
	} else if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(args, stderr)
	case "config":
		if len(args) == 0 || args[0] != "check" {
			fmt.Fprintln(stderr, "usage: kefu config check -c FILE")
			return 2
		}
		return configCheck(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "kefu", buildVersion())
		return 0
	case "telegram":
		if len(args) == 0 || args[0] != "set-webhook" {
			fmt.Fprintln(stderr, "usage: kefu telegram set-webhook -c FILE [--channel NAME]")
			return 2
		}
		return telegramSetWebhook(args[1:], stdout, stderr)
	case "migrate":
		if len(args) == 0 || args[0] != "sqlite-to-postgres" {
			fmt.Fprintln(stderr, migrateUsage)
			return 2
		}
		return migrateSQLiteToPostgres(args[1:], stdout, stderr)
	case "bench":
		return bench.Main(args, stdout, stderr)
	case "help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "kefu: unknown command %q\n", cmd)
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  kefu [serve] [-c FILE]       run a node (default; KEFU_CONFIG=FILE works too)
  kefu config check -c FILE    check a config file and print every problem
  kefu version                 print the version
  kefu telegram set-webhook -c FILE [--channel NAME]
                               register a Telegram channel's webhook with Telegram
  kefu migrate sqlite-to-postgres -from FILE -to URL [-media DIR] [-force]
                               copy a SQLite store's data (and the media folder) into PostgreSQL
  kefu bench SCENARIO -url URL load a server: idle, handshake, throughput, longpoll, reference
`)
}

// configFlag parses -c FILE, falling back to $KEFU_CONFIG.
func configFlag(name string, args []string, stderr io.Writer) (string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", os.Getenv("KEFU_CONFIG"), "config file (default $KEFU_CONFIG; none: built-in defaults)")
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected argument %q (a config file is given with -c FILE)", fs.Arg(0))
		fmt.Fprintf(stderr, "kefu %s: %v\n", name, err)
		fs.Usage()
		return "", err
	}
	return *path, nil
}

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}

func serve(args []string, stderr io.Writer) int {
	path, err := configFlag("serve", args, stderr)
	if err != nil {
		return 2
	}
	cfg, err := loadConfig(path)
	if err != nil {
		printConfigError(stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := node.NewLogger(cfg.Log, stderr)
	log.Info("kefu starting", "version", buildVersion(), "config", displayPath(path), "node_id", cfg.NodeID)
	if os.Getenv("GOGC") == "" { // an operator's GOGC wins
		defer gcfloor.Start(gcFloor).Stop()
	}
	n, err := node.New(ctx, cfg, node.Options{Logger: log})
	if err != nil {
		log.Error("kefu cannot start", "err", err)
		return 1
	}
	if err := announce(ctx, n, cfg, stderr); err != nil {
		log.Error("kefu cannot start", "err", err)
		_ = n.Close()
		return 1
	}
	if err := n.Run(ctx); err != nil {
		log.Error("kefu stopped with an error", "err", err)
		return 1
	}
	log.Info("kefu stopped")
	return 0
}

// announce tells the operator where to go: the console and the demo page
// (when a web channel is enabled), and on a fresh deployment the admin
// account created for them, with its password. The password is printed
// here, once, to stderr, and never logged: the store keeps only its hash.
func announce(ctx context.Context, n *node.Node, cfg *config.Config, w io.Writer) error {
	email, password, err := n.EnsureFirstAdmin(ctx)
	if err != nil {
		return err
	}
	web := false
	for _, inst := range cfg.EnabledChannels() {
		web = web || inst.Type == "web"
	}
	base := n.BaseURL()
	var b strings.Builder
	if web {
		fmt.Fprintf(&b, "\nkefu is up.\n  console:  %s/console/\n  demo:     %s/demo   (the visitor widget on a sample page: chat with yourself)\n", base, base)
	}
	if len(cfg.EnabledChannels()) == 0 {
		b.WriteString("\nNo channel is enabled: nobody can reach kefu, neither customers nor agents (no console).\n" +
			"Enable one under channels:, such as the web channel (channels.web, the built-in default).\n")
	}
	if password != "" {
		fmt.Fprintf(&b, "\nFirst start: an admin account was created.\n  email:    %s\n  password: %s\n", email, password)
		if web {
			b.WriteString("This password is shown only this once. Log in to the console and create your own accounts.\n")
		} else {
			b.WriteString("This password is shown only this once. The console comes with the web channel: enable channels.web to log in with it.\n")
		}
	}
	if b.Len() > 0 {
		b.WriteString("\n")
		_, _ = io.WriteString(w, b.String())
	}
	return nil
}

func configCheck(args []string, stdout, stderr io.Writer) int {
	path, err := configFlag("config check", args, stderr)
	if err != nil {
		return 2
	}
	if path == "" {
		fmt.Fprintln(stderr, "usage: kefu config check -c FILE")
		return 2
	}
	cfg, err := config.Load(path)
	if err != nil {
		printConfigError(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	if len(cfg.EnabledChannels()) == 0 {
		fmt.Fprintf(stderr, "%s: note: no channel is enabled, so nobody can reach kefu (no console); the built-in default enables channels.web\n", path)
	}
	return 0
}

// telegramSetWebhook is `kefu telegram set-webhook`: it tells Telegram to
// post a telegram channel's updates to {server.public_url}/webhooks/NAME
// with its webhook_secret (see docs/channels/telegram.md).
func telegramSetWebhook(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("telegram set-webhook", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", os.Getenv("KEFU_CONFIG"), "config file (default $KEFU_CONFIG)")
	name := fs.String("channel", "", "telegram channel instance (default: the only enabled one)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: kefu telegram set-webhook -c FILE [--channel NAME]")
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printConfigError(stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := telegram.SetWebhookCommand(ctx, cfg, *name, stdout); err != nil {
		fmt.Fprintln(stderr, "kefu telegram set-webhook:", err)
		return 1
	}
	return 0
}

const migrateUsage = "usage: kefu migrate sqlite-to-postgres -from FILE -to URL [-media DIR] [-force]"

// migrateSQLiteToPostgres is `kefu migrate sqlite-to-postgres`: it copies
// every row of a SQLite store (IDs and sequence numbers kept) into a
// PostgreSQL database, so that a deployment moving to store.driver: postgres
// keeps its history, and with -media the files of a media folder
// (media.dir) into the same database, for media.driver: postgres. Stop the
// nodes using the SQLite file first. The target must be empty unless
// -force, which replaces what it holds; files it holds already are skipped.
func migrateSQLiteToPostgres(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("migrate sqlite-to-postgres", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "data/kefu.db", "the SQLite database file (store.dsn of the sqlite store)")
	to := fs.String("to", "", "the PostgreSQL URL (postgres://…); its schema is created or migrated")
	force := fs.Bool("force", false, "replace whatever the target database already holds")
	mediaDir := fs.String("media", "", "also copy this media folder (media.dir) into the database, for media.driver: postgres")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *to == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, migrateUsage)
		return 2
	}
	if _, err := os.Stat(*from); err != nil {
		fmt.Fprintln(stderr, "kefu migrate:", err)
		return 1
	}
	if *mediaDir != "" {
		if fi, err := os.Stat(*mediaDir); err != nil || !fi.IsDir() {
			fmt.Fprintf(stderr, "kefu migrate: -media %s: not a folder\n", *mediaDir)
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fail := func(err error) int {
		fmt.Fprintln(stderr, "kefu migrate:", err)
		return 1
	}
	// Only a kefu database is opened as a store (which brings its schema to
	// this kefu's version): any other file is left as it is.
	if err := checkKefuDB(*from); err != nil {
		return fail(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	ss, err := sqlite.Open(ctx, sqlite.Options{Path: *from, Logger: quiet})
	if err != nil {
		return fail(err)
	}
	// Open until the copy is done: it holds the database's lock, so that
	// no kefu serve starts writing what the copy would miss.
	defer func() { _ = ss.Close() }()
	src, err := sql.Open("sqlite", *from+"?_busy_timeout=10000&_query_only=on")
	if err != nil {
		return fail(err)
	}
	defer func() { _ = src.Close() }()
	dst, err := postgres.Open(ctx, postgres.Options{DSN: *to, Logger: quiet})
	if err != nil {
		return fail(err)
	}
	defer func() { _ = dst.Close() }()
	start := time.Now()
	counts, err := postgres.ImportSQLite(ctx, src, dst, postgres.ImportOptions{Force: *force})
	if errors.Is(err, core.ErrConflict) {
		return fail(fmt.Errorf("%s already holds data; -force replaces it", config.Redact(*to)))
	}
	if err != nil {
		return fail(err)
	}
	for _, c := range counts {
		fmt.Fprintf(stdout, "%-14s %d\n", c.Table, c.Rows)
	}
	if *mediaDir != "" {
		c, err := copyMediaToPostgres(ctx, *mediaDir, *to)
		if err != nil {
			return fail(fmt.Errorf("%w (the rows are copied; run the same command with -force to finish: "+
				"files copied already are skipped)", err))
		}
		fmt.Fprintf(stdout, "%-14s %d (%d bytes; %d there already)\n", "media files", c.Copied, c.Bytes, c.Skipped)
	}
	fmt.Fprintf(stdout, "copied %s to PostgreSQL in %s\n", *from, time.Since(start).Round(time.Millisecond))
	return 0
}

// copyMediaToPostgres copies every file of the media folder dir into the
// media tables of the PostgreSQL database dsn names (migrated already).
func copyMediaToPostgres(ctx context.Context, dir, dsn string) (media.CopyCount, error) {
	src, err := local.New(dir)
	if err != nil {
		return media.CopyCount{}, err
	}
	defer func() { _ = src.Close() }()
	dst, err := mediapg.Open(ctx, mediapg.Options{DSN: dsn, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return media.CopyCount{}, err
	}
	defer func() { _ = dst.Close() }()
	return media.Copy(ctx, dst, src)
}

// printConfigError prints a config error, one problem per line.
func printConfigError(w io.Writer, err error) {
	var errs *config.Errors
	if errors.As(err, &errs) {
		for _, e := range *errs {
			fmt.Fprintln(w, e.Error())
		}
		return
	}
	fmt.Fprintln(w, err)
}

func displayPath(p string) string {
	if p == "" {
		return "(built-in defaults)"
	}
	return p
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// checkKefuDB reports whether path is an existing SQLite file that kefu
// made, reading it only.
func checkKefuDB(path string) error {
	if _, err := os.Stat(path); err != nil {
		return err
	}
	db, err := sql.Open("sqlite", path+"?_query_only=on")
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('goose_db_version', 'messages')`).Scan(&n); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if n != 2 {
		return fmt.Errorf("%s is not a kefu database (no kefu tables in it)", path)
	}
	return nil
}
