// Command scoreboard is the reference app shipped by portable-deploy: a tiny
// HTTP scoreboard backed by SQLite, served only on sockets passed by systemd
// socket activation, so that restarts never close the port.
//
// Environment:
//
//	LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES  systemd socket activation; the
//	    sockets named "http" (and "https", as plain HTTP for now) are served.
//	SCOREBOARD_DB           database path (default /var/lib/scoreboard/app.db)
//	SCOREBOARD_LISTEN=ADDR  bind ADDR itself instead of using passed sockets.
//	    For the benchmark baseline "app binds its own port" only.
//	SCOREBOARD_FAIL_HEALTH=1  /healthz answers 500 (also: -X main.failHealth=1)
//	SCOREBOARD_DEBUG=1      enable GET /debug/sleep?ms=N (tests)
//
// Build-time variables (go build -ldflags "-X main.NAME=VALUE"):
// version (default "dev") and failHealth ("1" builds a deliberately broken release).
package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

var (
	version    = "dev"
	failHealth = ""
)

const (
	defaultDB       = "/var/lib/scoreboard/app.db"
	shutdownTimeout = 10 * time.Second
)

func logf(format string, args ...any) { log.Printf(format, args...) }

func main() {
	log.SetFlags(0) // journald timestamps the lines
	log.SetPrefix("scoreboard: ")
	if err := run(); err != nil {
		log.Printf("fatal: %v", err)
		os.Exit(1)
	}
}

func run() error {
	passed, err := activationListeners()
	if err != nil {
		return err
	}
	listeners, err := pickListeners(passed, os.Getenv("SCOREBOARD_LISTEN"))
	if err != nil {
		return err
	}

	dbPath := os.Getenv("SCOREBOARD_DB")
	if dbPath == "" {
		dbPath = defaultDB
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	st, err := openStore(ctx, dbPath)
	cancel()
	if err != nil {
		return fmt.Errorf("open database %s: %v", dbPath, err)
	}

	a := &app{
		store:      st,
		version:    version,
		failHealth: failHealth == "1" || os.Getenv("SCOREBOARD_FAIL_HEALTH") == "1",
		debug:      os.Getenv("SCOREBOARD_DEBUG") == "1",
	}
	srv := &http.Server{
		Handler:           a.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	serveErr := make(chan error, len(listeners))
	var desc []string
	for _, l := range listeners {
		if l.fd >= 0 {
			desc = append(desc, fmt.Sprintf("fd %d (%s, %s)", l.fd, l.name, l.Addr()))
		} else {
			desc = append(desc, l.name)
		}
		go func(l namedListener) { serveErr <- srv.Serve(l) }(l)
	}
	logf("version %s starting: serving %s; db %s; failHealth=%t",
		version, strings.Join(desc, ", "), dbPath, a.failHealth)

	var exitErr error
	select {
	case sig := <-sigs:
		logf("got %v: shutting down (up to %v for in-flight requests)", sig, shutdownTimeout)
	case err := <-serveErr:
		exitErr = fmt.Errorf("serve: %v", err)
		logf("%v: shutting down", exitErr)
	}

	ctx, cancel = context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
		if exitErr == nil {
			exitErr = fmt.Errorf("shutdown: %v", err)
		}
	}
	if err := st.Close(); err != nil && exitErr == nil {
		exitErr = fmt.Errorf("close database: %v", err)
	}
	if exitErr != nil {
		return exitErr
	}
	logf("stopped cleanly")
	return nil
}
