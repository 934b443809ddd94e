package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// listenFdsStart is SD_LISTEN_FDS_START: the first fd systemd passes.
const listenFdsStart = 3

// namedListener is a listening socket together with the name systemd gave it
// (FileDescriptorName= in the .socket unit).
type namedListener struct {
	name string
	fd   int
	net.Listener
}

// activationListeners returns the sockets passed by systemd socket activation
// (sd_listen_fds_with_names semantics). It always unsets LISTEN_PID,
// LISTEN_FDS and LISTEN_FDNAMES so that child processes do not inherit them.
// If LISTEN_PID is not our pid, the variables were meant for another process
// and no sockets are returned.
func activationListeners() ([]namedListener, error) {
	pidStr, fdsStr, namesStr := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")

	if pidStr == "" || fdsStr == "" {
		return nil, nil
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil {
		return nil, fmt.Errorf("bad LISTEN_PID %q: %v", pidStr, err)
	}
	if pid != os.Getpid() {
		logf("LISTEN_PID=%d is not our pid %d: ignoring passed sockets", pid, os.Getpid())
		return nil, nil
	}
	n, err := strconv.Atoi(fdsStr)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("bad LISTEN_FDS %q", fdsStr)
	}
	var names []string
	if namesStr != "" {
		names = strings.Split(namesStr, ":")
	}

	var ls []namedListener
	for i := 0; i < n; i++ {
		fd := listenFdsStart + i
		name := "unknown" // what sd_listen_fds_with_names reports without LISTEN_FDNAMES
		if i < len(names) {
			name = names[i]
		}
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), name)
		l, err := net.FileListener(f) // dups the fd
		f.Close()
		if err != nil {
			for _, nl := range ls {
				nl.Close()
			}
			return nil, fmt.Errorf("passed fd %d (%s) is not a listening socket: %v", fd, name, err)
		}
		ls = append(ls, namedListener{name: name, fd: fd, Listener: l})
	}
	return ls, nil
}

// pickListeners chooses what to serve: the passed sockets named "http" and
// "https" (what each serves depends on whether TLS is on; see run), or, only when
// SCOREBOARD_LISTEN is set, a socket the app binds itself (benchmark baseline).
func pickListeners(passed []namedListener, selfAddr string) ([]namedListener, error) {
	if selfAddr != "" {
		for _, l := range passed {
			logf("SCOREBOARD_LISTEN is set: ignoring passed fd %d (%s)", l.fd, l.name)
			l.Close()
		}
		l, err := net.Listen("tcp", selfAddr)
		if err != nil {
			return nil, fmt.Errorf("SCOREBOARD_LISTEN=%s: %v", selfAddr, err)
		}
		return []namedListener{{name: "self:" + l.Addr().String(), fd: -1, Listener: l}}, nil
	}

	var use []namedListener
	var got []string
	for _, l := range passed {
		got = append(got, fmt.Sprintf("%d=%s", l.fd, l.name))
		switch l.name {
		case "http", "https":
			use = append(use, l)
		default:
			logf("ignoring passed fd %d with unexpected name %q", l.fd, l.name)
			l.Close()
		}
	}
	if len(use) == 0 {
		if len(passed) == 0 {
			return nil, errors.New("no socket passed by systemd socket activation (LISTEN_FDS unset or 0); " +
				"start via scoreboard-http.socket, or set SCOREBOARD_LISTEN=ADDR to bind one")
		}
		return nil, fmt.Errorf("no passed socket named \"http\" or \"https\" (got %s); "+
			"set FileDescriptorName=http in the .socket unit", strings.Join(got, ", "))
	}
	return use, nil
}
