package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// apiTokenCredential is the name of the systemd credential holding the API
// token (LoadCredential=api-token:... or LoadCredentialEncrypted=api-token:...):
// the file $CREDENTIALS_DIRECTORY/api-token.
const apiTokenCredential = "api-token"

// maxTokenBytes bounds the credential file read at start.
const maxTokenBytes = 4096

// apiToken is the configured API token, kept only as its SHA-256 digest:
// comparing digests is constant-time and leaks neither content nor length.
type apiToken struct {
	digest [sha256.Size]byte
}

// loadAPIToken reads the API token from the systemd credentials directory.
//
// It returns (nil, description, nil) when no token is configured: no
// $CREDENTIALS_DIRECTORY, or no api-token file in it. A credential that is
// there but unreadable, empty or not a single header-safe word is an error:
// the operator meant to set a token, and running without one would be silent.
// Neither the token nor anything derived from it (length, prefix) is ever put
// in a message.
func loadAPIToken(credsDir string) (*apiToken, string, error) {
	if credsDir == "" {
		return nil, "api token: not configured (CREDENTIALS_DIRECTORY unset); GET /api/whoami answers 404", nil
	}
	path := filepath.Join(credsDir, apiTokenCredential)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Sprintf("api token: not configured (no %s in CREDENTIALS_DIRECTORY=%s); GET /api/whoami answers 404",
			apiTokenCredential, credsDir), nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("api token credential: %v", err)
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		// The *PathError names the file and the syscall, never the content.
		return nil, "", fmt.Errorf("api token credential: %v", err)
	}
	if len(buf) > maxTokenBytes {
		return nil, "", fmt.Errorf("api token credential %s: longer than %d bytes", path, maxTokenBytes)
	}
	token := strings.TrimSuffix(string(buf), "\n")
	token = strings.TrimSuffix(token, "\r")
	if token == "" {
		return nil, "", fmt.Errorf("api token credential %s is empty; remove it to run without an API token", path)
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c >= 0x7f {
			return nil, "", fmt.Errorf("api token credential %s: the token must be one word of visible ASCII "+
				"(no spaces, control or non-ASCII characters, one trailing newline allowed)", path)
		}
	}
	return &apiToken{digest: sha256.Sum256([]byte(token))}, fmt.Sprintf(
		"api token: configured (credential %s from CREDENTIALS_DIRECTORY=%s); GET /api/whoami requires it",
		apiTokenCredential, credsDir), nil
}

// matches reports whether the Authorization header value is "Bearer TOKEN"
// (scheme case-insensitive) with the configured token, in constant time.
func (t *apiToken) matches(authorization string) bool {
	const scheme = "bearer "
	if len(authorization) < len(scheme) || !strings.EqualFold(authorization[:len(scheme)], scheme) {
		return false
	}
	given := sha256.Sum256([]byte(strings.TrimSpace(authorization[len(scheme):])))
	return subtle.ConstantTimeCompare(given[:], t.digest[:]) == 1
}

// whoami is GET /api/whoami: a side-effect-free check that the caller holds
// the API token. 404 when no token is configured (the endpoint does not exist
// on such a deployment), 401 without the right bearer token, else 200.
func (a *app) whoami(w http.ResponseWriter, r *http.Request) {
	if a.token == nil {
		jsonError(w, http.StatusNotFound, "no API token configured")
		return
	}
	if !allow(w, r, http.MethodGet) {
		return
	}
	if !a.token.matches(r.Header.Get("Authorization")) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="scoreboard"`)
		jsonError(w, http.StatusUnauthorized, "missing or wrong bearer token")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}
