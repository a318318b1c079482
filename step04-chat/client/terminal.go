//go:build linux || darwin

package main

// In its usual (canonical) mode a terminal keeps the line being typed and echoes it itself, so the
// client cannot tell where the typing is, and a line from the room lands in the middle of it. In raw
// mode the client gets every key as it is pressed and draws the line itself (editor.go); it can then
// clear that line, print the room's, and draw the typing again below.

import (
	"fmt"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// isTerminal says whether fd is a terminal: only a terminal has modes (termios) to read.
func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, ioctlGetTermios)
	return err == nil
}

// terminal is the console when stdin and stdout are a terminal: raw mode, with the line edited here.
type terminal struct {
	lineEditor
	fd     int
	saved  unix.Termios // the modes we found, put back on exit
	closed bool
}

// openTerminal puts the terminal fd in raw mode and draws the prompt. A signal that would end the
// client puts the modes back first: a shell left without echo looks broken.
func openTerminal(fd int, out *os.File) (*terminal, error) {
	saved, err := unix.IoctlGetTermios(fd, ioctlGetTermios)
	if err != nil {
		return nil, fmt.Errorf("reading the terminal's modes: %w", err)
	}
	t := &terminal{lineEditor: lineEditor{out: out}, fd: fd, saved: *saved}
	restoreOnSignal(fd, t.saved)
	if err := unix.IoctlSetTermios(fd, ioctlSetTermios, rawMode(t.saved)); err != nil {
		return nil, fmt.Errorf("setting the terminal's modes: %w", err)
	}
	t.start()
	return t, nil
}

// rawMode is m without the line discipline's editing (ICANON), echo (ECHO), signal keys (ISIG: Ctrl-C
// becomes a key we read) and extensions (IEXTEN: Ctrl-V, Ctrl-O). Output processing stays on, so the
// room's "\n" still starts a new line.
func rawMode(m unix.Termios) *unix.Termios {
	m.Lflag &^= unix.ICANON | unix.ECHO | unix.ISIG | unix.IEXTEN
	m.Cc[unix.VMIN] = 1 // a read returns as soon as one key is pressed
	m.Cc[unix.VTIME] = 0
	return &m
}

func (t *terminal) close() {
	if t.closed {
		return
	}
	t.closed = true
	t.lineEditor.close()
	unix.IoctlSetTermios(t.fd, ioctlSetTermios, &t.saved)
}

// restoreOnSignal puts the terminal's modes back and exits when a signal asks the client to stop: from
// kill, or the terminal closing (SIGHUP); Ctrl-C is a key in raw mode, not a signal. The exit status is
// the shell's convention for "killed by a signal", 128 plus its number.
func restoreOnSignal(fd int, saved unix.Termios) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT)
	go func() {
		sig := (<-sigs).(unix.Signal)
		unix.IoctlSetTermios(fd, ioctlSetTermios, &saved)
		fmt.Fprintf(os.Stderr, "\r\nchat client: stopped by %v\n", sig)
		os.Exit(128 + int(sig))
	}()
}
