package main

import (
	"context"
	"database/sql"
	"net/url"

	_ "github.com/mattn/go-sqlite3"
)

// Score is one row of the scoreboard.
type Score struct {
	Player string `json:"player"`
	Points int64  `json:"points"`
}

type store struct{ db *sql.DB }

// openStore opens (creating if needed) the SQLite database at path in WAL
// mode, with a busy timeout so concurrent writers (and Litestream's
// checkpoints) wait instead of failing with SQLITE_BUSY. synchronous=FULL
// syncs the WAL at every commit: a write the app has acknowledged survives a
// power cut too (NORMAL keeps it only across a crash of the process).
func openStore(ctx context.Context, path string) (*store, error) {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_busy_timeout", "5000")
	q.Set("_synchronous", "FULL")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS scores (
		player TEXT PRIMARY KEY,
		points INTEGER NOT NULL DEFAULT 0
	)`); err != nil {
		db.Close()
		return nil, err
	}
	return &store{db: db}, nil
}

func (s *store) Close() error { return s.db.Close() }

func (s *store) Ping(ctx context.Context) error {
	var one int
	return s.db.QueryRowContext(ctx, `SELECT 1`).Scan(&one)
}

// List returns all scores, highest first (ties by player name).
func (s *store) List(ctx context.Context) ([]Score, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT player, points FROM scores ORDER BY points DESC, player`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	scores := []Score{}
	for rows.Next() {
		var sc Score
		if err := rows.Scan(&sc.Player, &sc.Points); err != nil {
			return nil, err
		}
		scores = append(scores, sc)
	}
	return scores, rows.Err()
}

// Add adds points to player (creating the row if needed) and returns the new total.
func (s *store) Add(ctx context.Context, player string, points int64) (int64, error) {
	var total int64
	err := s.db.QueryRowContext(ctx, `INSERT INTO scores (player, points) VALUES (?, ?)
		ON CONFLICT (player) DO UPDATE SET points = points + excluded.points
		RETURNING points`, player, points).Scan(&total)
	return total, err
}
