package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
	"golang.org/x/net/idna"
)

const defaultACMECache = "/var/lib/scoreboard/acme"

// errTLSOff is what a TLS handshake on the https socket gets while TLS is off.
var errTLSOff = errors.New("TLS is off: set SCOREBOARD_DOMAINS")

// tlsSettings is the ACME configuration read from the environment.
// A nil *tlsSettings means TLS is off.
type tlsSettings struct {
	domains   []string // ASCII (Punycode), lower case, no duplicates
	directory string
	email     string
	caFile    string
	cacheDir  string
}

// tlsFromEnv reads SCOREBOARD_DOMAINS and the SCOREBOARD_ACME_* variables.
// It returns nil (TLS off) when SCOREBOARD_DOMAINS is empty or unset.
func tlsFromEnv() (*tlsSettings, error) {
	domains, err := parseDomains(os.Getenv("SCOREBOARD_DOMAINS"))
	if err != nil || len(domains) == 0 {
		return nil, err
	}
	s := &tlsSettings{
		domains:   domains,
		directory: os.Getenv("SCOREBOARD_ACME_DIRECTORY"),
		email:     strings.TrimSpace(os.Getenv("SCOREBOARD_ACME_EMAIL")),
		caFile:    os.Getenv("SCOREBOARD_ACME_CA"),
		cacheDir:  os.Getenv("SCOREBOARD_ACME_CACHE"),
	}
	if s.directory == "" {
		s.directory = acme.LetsEncryptURL
	}
	if s.cacheDir == "" {
		s.cacheDir = defaultACMECache
	}
	return s, nil
}

// parseDomains splits SCOREBOARD_DOMAINS at commas and/or white space and
// normalises each name the way autocert does (Punycode, lower case).
func parseDomains(v string) ([]string, error) {
	fields := strings.FieldsFunc(v, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	})
	var out []string
	seen := map[string]bool{}
	for _, f := range fields {
		name, err := idna.Lookup.ToASCII(strings.TrimSuffix(f, "."))
		if err != nil || name == "" || strings.ContainsAny(name, ":/*") {
			return nil, fmt.Errorf("SCOREBOARD_DOMAINS: %q is not a valid host name", f)
		}
		if !strings.Contains(name, ".") {
			return nil, fmt.Errorf("SCOREBOARD_DOMAINS: %q has no dot; ACME certificates need a fully qualified name", f)
		}
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out, nil
}

// hostPolicy allows exactly the configured domains. The host may carry a port:
// during http-01 validation the CA sends "Host: name:80" and autocert passes
// r.Host to the policy unchanged.
func hostPolicy(domains []string) autocert.HostPolicy {
	allowed := autocert.HostWhitelist(domains...)
	return func(ctx context.Context, host string) error {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		return allowed(ctx, strings.ToLower(strings.TrimSuffix(host, ".")))
	}
}

// rootPool is the system root pool plus the certificates in caFile (if set).
func rootPool(caFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		logf("acme: cannot load the system root certificates (%v); using only SCOREBOARD_ACME_CA", err)
		pool = x509.NewCertPool()
	}
	if caFile == "" {
		//lint:ignore SA1019 Subjects is accurate for a pool loaded from files (Linux)
		if len(pool.Subjects()) == 0 {
			logf("acme: no system root certificates found (/etc/ssl/certs): the ACME server's " +
				"certificate cannot be verified; set SCOREBOARD_ACME_CA to a PEM file of roots")
		}
		return pool, nil
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("SCOREBOARD_ACME_CA: %v", err)
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("SCOREBOARD_ACME_CA=%s holds no PEM certificate", caFile)
	}
	return pool, nil
}

// loggingCache is autocert's cache that logs every certificate it stores.
type loggingCache struct{ autocert.Cache }

// Put stores the entry and, when it is a certificate (key "name" or
// "name+rsa"; not "acme_account+key", "TOKEN+http-01" or "name+token"),
// logs one line naming the domain.
func (c loggingCache) Put(ctx context.Context, key string, data []byte) error {
	if err := c.Cache.Put(ctx, key, data); err != nil {
		logf("acme: storing %s in the cache failed: %v", key, err)
		return err
	}
	if strings.HasSuffix(key, "+rsa") {
		logf("acme: stored certificate for %s (RSA)", strings.TrimSuffix(key, "+rsa"))
	} else if !strings.Contains(key, "+") {
		logf("acme: stored certificate for %s", key)
	}
	return nil
}

// newCertManager builds the autocert manager for s, or fails with a clear
// message when the CA file or the cache directory is unusable.
func newCertManager(s *tlsSettings) (*autocert.Manager, error) {
	pool, err := rootPool(s.caFile)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.cacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("SCOREBOARD_ACME_CACHE: %v", err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      loggingCache{autocert.DirCache(s.cacheDir)},
		HostPolicy: hostPolicy(s.domains),
		Email:      s.email,
		Client: &acme.Client{
			DirectoryURL: s.directory,
			UserAgent:    "scoreboard/" + version,
			HTTPClient:   &http.Client{Transport: transport},
		},
	}, nil
}

// redirectToHTTPS answers with a permanent redirect (308, which keeps the
// method and body) to the same path and query on https://HOST, where HOST is
// the request's Host without its port (or the first domain if it has none).
func redirectToHTTPS(fallbackHost string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" {
			host = fallbackHost
		}
		if strings.Contains(host, ":") { // IPv6 literal
			host = "[" + host + "]"
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}

// tlsOffConfig is the TLS configuration of the https socket while TLS is off:
// every handshake fails with an alert.
func tlsOffConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, errTLSOff },
	}
}
