package main

import "golang.org/x/sys/unix"

// The ioctl requests behind tcgetattr and tcsetattr: their names differ between Linux and macOS.
const (
	ioctlGetTermios = unix.TCGETS
	ioctlSetTermios = unix.TCSETS
)
