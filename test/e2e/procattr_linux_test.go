package e2e

import "syscall"

// childAttr makes the kernel send sig to the child when the test process
// dies, so a killed or timed-out test run leaves no processes behind.
func childAttr(sig syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: sig}
}
