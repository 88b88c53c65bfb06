//go:build !linux

package e2e

import "syscall"

func childAttr(syscall.Signal) *syscall.SysProcAttr { return nil }
