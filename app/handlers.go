package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	maxPlayerLen = 64            // bytes
	maxPoints    = 1_000_000_000 // per request, either sign; keeps totals far from int64 overflow
	maxBodyBytes = 4096
)

type app struct {
	store      *store
	version    string
	failHealth bool
	crashLater bool          // crash=later: close crashed 1 s after the first /healthz
	crashed    chan struct{} // closed when the crash is due
	crashOnce  sync.Once
	debug      bool
	token      *apiToken // nil: no API token configured
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", a.index)
	mux.HandleFunc("/api/scores", a.scores)
	mux.HandleFunc("/healthz", a.healthz)
	mux.HandleFunc("/version", a.versionHandler)
	mux.HandleFunc("/api/whoami", a.whoami)
	if a.debug {
		mux.HandleFunc("/debug/sleep", debugSleep)
	}
	return mux
}

func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m || (m == http.MethodGet && r.Method == http.MethodHead) {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func jsonError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

var indexTmpl = template.Must(template.New("index").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Scoreboard</title></head>
<body>
<h1>Scoreboard</h1>
{{if .Scores}}<table>
<tr><th>Player</th><th>Points</th></tr>
{{range .Scores}}<tr><td>{{.Player}}</td><td>{{.Points}}</td></tr>
{{end}}</table>{{else}}<p>No scores yet.</p>{{end}}
<footer>version {{.Version}}</footer>
</body></html>
`))

func (a *app) index(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if !allow(w, r, http.MethodGet) {
		return
	}
	scores, err := a.store.List(r.Context())
	if err != nil {
		logf("list scores: %v", err)
		http.Error(w, "database error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	indexTmpl.Execute(w, struct {
		Scores  []Score
		Version string
	}{scores, a.version})
}

func (a *app) scores(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet, http.MethodPost) {
		return
	}
	if r.Method == http.MethodPost {
		a.addScore(w, r)
		return
	}
	scores, err := a.store.List(r.Context())
	if err != nil {
		logf("list scores: %v", err)
		jsonError(w, http.StatusInternalServerError, "database error")
		return
	}
	writeJSON(w, http.StatusOK, scores)
}

// parseScore decodes and validates {"player": "x", "points": 3}.
func parseScore(body io.Reader) (Score, error) {
	var in struct {
		Player *string `json:"player"`
		Points *int64  `json:"points"`
	}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return Score{}, errors.New("invalid JSON: " + err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return Score{}, errors.New("invalid JSON: trailing data after object")
	}
	switch {
	case in.Player == nil:
		return Score{}, errors.New(`"player" is required`)
	case in.Points == nil:
		return Score{}, errors.New(`"points" is required and must be an integer`)
	}
	player := strings.TrimSpace(*in.Player)
	switch {
	case player == "":
		return Score{}, errors.New(`"player" must not be empty`)
	case len(player) > maxPlayerLen:
		return Score{}, errors.New(`"player" is longer than ` + strconv.Itoa(maxPlayerLen) + ` bytes`)
	case !utf8.ValidString(player) || strings.IndexFunc(player, unicode.IsControl) >= 0:
		return Score{}, errors.New(`"player" contains control characters`)
	case *in.Points > maxPoints || *in.Points < -maxPoints:
		return Score{}, errors.New(`"points" out of range`)
	}
	return Score{Player: player, Points: *in.Points}, nil
}

func (a *app) addScore(w http.ResponseWriter, r *http.Request) {
	in, err := parseScore(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		jsonError(w, http.StatusBadRequest, err.Error())
		return
	}
	total, err := a.store.Add(r.Context(), in.Player, in.Points)
	if err != nil {
		logf("add score: %v", err)
		jsonError(w, http.StatusInternalServerError, "database error")
		return
	}
	writeJSON(w, http.StatusOK, Score{Player: in.Player, Points: total})
}

func (a *app) healthz(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	if a.failHealth {
		http.Error(w, "failing on purpose (failHealth)", http.StatusInternalServerError)
		return
	}
	if a.crashLater {
		a.crashOnce.Do(func() { time.AfterFunc(time.Second, func() { close(a.crashed) }) })
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.health(ctx); err != nil {
		logf("healthz: %v", err)
		http.Error(w, "database unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok\n")
}

// health is the check behind /healthz (and the self-check at start): the
// release is not one built to fail it, and the database answers.
func (a *app) health(ctx context.Context) error {
	if a.failHealth {
		return fmt.Errorf("failing on purpose (failHealth)")
	}
	return a.store.Ping(ctx)
}

func (a *app) versionHandler(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, a.version+"\n")
}

// debugSleep (only with SCOREBOARD_DEBUG=1) answers after ?ms=N milliseconds,
// so tests can have a request in flight while the server shuts down.
func debugSleep(w http.ResponseWriter, r *http.Request) {
	ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
	if err != nil || ms < 0 || ms > 60_000 {
		http.Error(w, "ms must be an integer in 0..60000", http.StatusBadRequest)
		return
	}
	select {
	case <-time.After(time.Duration(ms) * time.Millisecond):
		io.WriteString(w, "slept "+strconv.Itoa(ms)+"ms\n")
	case <-r.Context().Done():
	}
}
