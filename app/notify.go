package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"
)

// notify sends STATE (such as "READY=1") to systemd's notify socket
// ($NOTIFY_SOCKET, set for Type=notify services), as sd_notify(3) does. Without
// the variable it does nothing: the app runs outside systemd, or in a unit of
// another type. The variable is unset so that child processes do not inherit it.
func notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' { // an abstract socket
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify systemd (%s): %v", state, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify systemd (%s): %v", state, err)
	}
	return nil
}

// selfCheck is what /healthz checks, run once before the app serves a passed
// socket: a release that would fail its health check exits instead (with
// Type=notify, before it has taken a single connection from the socket it shares
// with the release it replaces).
func (a *app) selfCheck() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return a.health(ctx)
}
