// Command scoreboard is the reference app shipped by portable-deploy: a tiny
// HTTP scoreboard backed by SQLite, served only on sockets passed by systemd
// socket activation, so that restarts never close the port.
//
// Environment:
//
//	LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES  systemd socket activation; the
//	    sockets named "http" and "https" are served. With TLS off, "http"
//	    serves the app and TLS handshakes on "https" fail. With TLS on,
//	    "https" serves the app over TLS and "http" only answers ACME http-01
//	    challenges (/.well-known/acme-challenge/) and redirects everything
//	    else with 308 to https://HOST/PATH?QUERY (HOST without its port).
//	SCOREBOARD_DOMAINS      host names for the certificate, separated by commas
//	    and/or spaces; empty or unset = TLS off. Setting it accepts the ACME
//	    CA's terms of service; it needs a passed socket named "https".
//	SCOREBOARD_ACME_DIRECTORY  ACME directory URL (default: Let's Encrypt
//	    production, acme.LetsEncryptURL)
//	SCOREBOARD_ACME_EMAIL   optional contact e-mail for the ACME account
//	SCOREBOARD_ACME_CA      optional PEM file of extra root certificates to
//	    trust (besides the system's) for the ACME server's own HTTPS, e.g. a
//	    test CA such as pebble; unreadable or without certificates = fatal
//	SCOREBOARD_ACME_CACHE   account key and certificate cache directory
//	    (default /var/lib/scoreboard/acme, in the StateDirectory, so restarts,
//	    deploys and rollbacks reuse the certificate instead of re-issuing)
//	CREDENTIALS_DIRECTORY   set by systemd for LoadCredential=/
//	    LoadCredentialEncrypted=. Its file "api-token" (one trailing newline
//	    stripped) is the token GET /api/whoami requires as "Authorization:
//	    Bearer TOKEN". No directory or no such file: no token, and
//	    /api/whoami answers 404. An unreadable, empty or multi-word api-token
//	    is fatal. The token is never logged.
//	SCOREBOARD_DB           database path (default /var/lib/scoreboard/app.db)
//	SCOREBOARD_LISTEN=ADDR  bind ADDR itself instead of using passed sockets.
//	    For the benchmark baseline "app binds its own port" only.
//	SCOREBOARD_FAIL_HEALTH=1  /healthz answers 500 (also: -X main.failHealth=1); =VERSION: only
//	                          that version's does (one host of a fleet fails one release)
//	SCOREBOARD_DEBUG=1      enable GET /debug/sleep?ms=N (tests)
//	NOTIFY_SOCKET           set by systemd for Type=notify: the app checks its own
//	    health (what /healthz checks) before it serves any socket, exits 1 if
//	    that fails, and says READY=1 once it serves
//
// Build-time variables (go build -ldflags "-X main.NAME=VALUE"):
// version (default "dev"), failHealth ("1" builds a release whose /healthz fails) and crash
// (deliberately broken releases for the fault suite: "start" exits at once with an error;
// "later" exits 1 s after it has answered its first /healthz, so it passes a first health
// check and then crash-loops under Restart=on-failure).
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

	"golang.org/x/crypto/acme/autocert"
)

var (
	version    = "dev"
	failHealth = ""
	crash      = ""
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
	if crash == "start" {
		return fmt.Errorf("exiting at start on purpose (a release built with crash=start)")
	}
	passed, err := activationListeners()
	if err != nil {
		return err
	}
	listeners, err := pickListeners(passed, os.Getenv("SCOREBOARD_LISTEN"))
	if err != nil {
		return err
	}

	tlsSet, err := tlsFromEnv()
	if err != nil {
		return err
	}
	var certs *autocert.Manager
	tlsDesc := "tls off (SCOREBOARD_DOMAINS unset)"
	if tlsSet != nil {
		if !hasListener(listeners, "https") {
			return fmt.Errorf("SCOREBOARD_DOMAINS is set (%s) but no passed socket is named \"https\"; "+
				"pass one (FileDescriptorName=https, e.g. ListenStream=443) or unset SCOREBOARD_DOMAINS",
				strings.Join(tlsSet.domains, " "))
		}
		if certs, err = newCertManager(tlsSet); err != nil {
			return err
		}
		tlsDesc = fmt.Sprintf("tls on (ACME) for %s; directory %s; cache %s",
			strings.Join(tlsSet.domains, ","), tlsSet.directory, tlsSet.cacheDir)
	}

	token, tokenDesc, err := loadAPIToken(os.Getenv("CREDENTIALS_DIRECTORY"))
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
		failHealth: failHealth == "1" || failsHealth(os.Getenv("SCOREBOARD_FAIL_HEALTH"), version),
		debug:      os.Getenv("SCOREBOARD_DEBUG") == "1",
		crashLater: crash == "later",
		crashed:    make(chan struct{}),
		token:      token,
	}
	logf("%s", tokenDesc)
	appHandler := a.routes()

	// One server per socket. All of them are set up before any serves:
	// autocert only offers http-01 once HTTPHandler has been called.
	type serving struct {
		l   namedListener
		srv *http.Server
	}
	var servers []serving
	for _, l := range listeners {
		srv := &http.Server{
			Handler:           appHandler,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       60 * time.Second,
		}
		switch {
		case l.name == "https" && certs != nil:
			srv.TLSConfig = certs.TLSConfig() // also answers tls-alpn-01 challenges
		case l.name == "https":
			srv.TLSConfig = tlsOffConfig()
			logf("fd %d (https): TLS is off (SCOREBOARD_DOMAINS unset): TLS handshakes on it fail", l.fd)
		case l.name == "http" && certs != nil:
			srv.Handler = certs.HTTPHandler(redirectToHTTPS(tlsSet.domains[0]))
			logf("fd %d (http): serving ACME http-01 challenges; everything else is redirected to https", l.fd)
		}
		servers = append(servers, serving{l, srv})
	}
	if certs != nil && !hasListener(listeners, "http") {
		logf("no passed socket named \"http\": ACME can validate only with tls-alpn-01 (on the https socket)")
	}

	// Under Type=notify, the health check before any socket is served: a release
	// that would fail it exits here, having taken no connection (see selfCheck).
	if os.Getenv("NOTIFY_SOCKET") != "" {
		if err := a.selfCheck(); err != nil {
			st.Close()
			return fmt.Errorf("self-check before serving: %v", err)
		}
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	serveErr := make(chan error, len(servers))
	var desc []string
	for _, s := range servers {
		l := s.l
		if l.fd >= 0 {
			desc = append(desc, fmt.Sprintf("fd %d (%s, %s)", l.fd, l.name, l.Addr()))
		} else {
			desc = append(desc, l.name)
		}
		go func(s serving) {
			if s.srv.TLSConfig != nil {
				serveErr <- s.srv.ServeTLS(s.l, "", "")
			} else {
				serveErr <- s.srv.Serve(s.l)
			}
		}(s)
	}
	logf("version %s starting: serving %s; db %s; failHealth=%t; %s",
		version, strings.Join(desc, ", "), dbPath, a.failHealth, tlsDesc)
	// Type=notify: the start job (and an overlapped switch's gate) ends here,
	// with the release's own health check passed before the first accept.
	if err := notify("READY=1"); err != nil {
		logf("%v", err)
	}

	var exitErr error
	select {
	case sig := <-sigs:
		logf("got %v: shutting down (up to %v for in-flight requests)", sig, shutdownTimeout)
	case err := <-serveErr:
		exitErr = fmt.Errorf("serve: %v", err)
		logf("%v: shutting down", exitErr)
	case <-a.crashed:
		logf("crashing on purpose 1 s after the first health check (a release built with crash=later)")
		os.Exit(1)
	}

	// Drain all servers at once, within one deadline.
	ctx, cancel = context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	shutdownErrs := make(chan error, len(servers))
	for _, s := range servers {
		go func(srv *http.Server) {
			err := srv.Shutdown(ctx)
			if err != nil {
				srv.Close()
			}
			shutdownErrs <- err
		}(s.srv)
	}
	for range servers {
		if err := <-shutdownErrs; err != nil && exitErr == nil {
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

func hasListener(ls []namedListener, name string) bool {
	for _, l := range ls {
		if l.name == name {
			return true
		}
	}
	return false
}

// failsHealth says whether SCOREBOARD_FAIL_HEALTH (the value SETTING) makes VERSION's /healthz
// fail: "1" for every version, or the version itself.
func failsHealth(setting, version string) bool {
	return setting == "1" || (setting != "" && setting == version)
}
