package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// process is a binary the suite started, with its output in a log file.
type process struct {
	name, logPath string
	cmd           *exec.Cmd
	done          chan struct{}
	waitErr       error
}

var (
	logNamesMu sync.Mutex
	logNames   = map[string]int{}
)

// startProcess starts bin with args; its standard output and error go to
// <artifacts>/<name>[-n].log. The kernel sends deathSig to it if the test
// process dies. When the current spec fails, the end of the log is printed.
func startProcess(name string, deathSig syscall.Signal, bin string, args ...string) *process {
	GinkgoHelper()
	logNamesMu.Lock()
	logNames[name]++
	logName := name
	if n := logNames[name]; n > 1 {
		logName = fmt.Sprintf("%s-%d", name, n)
	}
	logNamesMu.Unlock()
	p := &process{name: logName, logPath: filepath.Join(artifacts, logName+".log"), done: make(chan struct{})}
	f, err := os.Create(p.logPath)
	Expect(err).NotTo(HaveOccurred())
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = childAttr(deathSig)
	Expect(p.cmd.Start()).To(Succeed(), "starting %s", bin)
	go func() {
		p.waitErr = p.cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	GinkgoWriter.Printf("started %s (pid %d): %s %s\n  log: %s\n", logName, p.cmd.Process.Pid,
		filepath.Base(bin), strings.Join(args, " "), p.logPath)
	DeferCleanup(func() {
		if CurrentSpecReport().Failed() {
			GinkgoWriter.Printf("\n--- the end of %s ---\n%s\n", p.logPath, p.tail(40))
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) log() string {
	data, _ := os.ReadFile(p.logPath)
	return string(data)
}

func (p *process) tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// failIfExited stops an Eventually when the process is gone.
func (p *process) failIfExited() {
	if p.exited() {
		StopTrying(fmt.Sprintf("%s exited (%v); the end of its log:\n%s", p.name, p.waitErr, p.tail(30))).Now()
	}
}

// waitForLog waits until the process logs text.
func (p *process) waitForLog(text string, timeout time.Duration) {
	GinkgoHelper()
	Eventually(func() string {
		p.failIfExited()
		return p.log()
	}).WithTimeout(timeout).WithPolling(100*time.Millisecond).Should(ContainSubstring(text),
		"%s did not log %q", p.name, text)
}

// waitForHTTP waits until url answers 200.
func (p *process) waitForHTTP(url string, timeout time.Duration) {
	GinkgoHelper()
	client := &http.Client{Timeout: 2 * time.Second}
	Eventually(func() error {
		p.failIfExited()
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}).WithTimeout(timeout).WithPolling(200*time.Millisecond).Should(Succeed(), "%s is not ready", p.name)
}

// stop sends SIGTERM and waits for the process to exit, then SIGKILL after
// grace.
func (p *process) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		GinkgoWriter.Printf("%s did not stop within %s; killing it\n", p.name, grace)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill sends SIGKILL and waits until the process is gone.
func (p *process) kill() {
	GinkgoHelper()
	Expect(p.cmd.Process.Signal(syscall.SIGKILL)).To(Succeed())
	Eventually(p.done).WithTimeout(30 * time.Second).Should(BeClosed())
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func freePort() string {
	GinkgoHelper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// listening reports whether something accepts connections on 127.0.0.1:port.
func listening(port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// startManager starts the manager binary against the suite's control plane
// (metrics off, probes on a free port) and waits until it is ready.
func startManager(extraArgs ...string) *process {
	GinkgoHelper()
	probe := "127.0.0.1:" + freePort()
	args := append([]string{
		"--kubeconfig", kubeconfig,
		"--metrics-bind-address=0",
		"--health-probe-bind-address=" + probe,
		"--participant-probe-interval=2s",
	}, extraArgs...)
	p := startProcess("manager", syscall.SIGKILL, filepath.Join(binDir, "manager"), args...)
	p.waitForHTTP("http://"+probe+"/readyz", time.Minute)
	return p
}

// newNamespace creates a namespace with a unique name for one spec. The
// control plane has no namespace controller, so it stays until the suite
// ends.
func newNamespace(prefix string) string {
	GinkgoHelper()
	out := mustKubectl("create", "namespace", prefix+"-"+randomSuffix(), "-o", "jsonpath={.metadata.name}")
	Expect(out).NotTo(BeEmpty())
	return out
}

func randomSuffix() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 5)
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	return string(b)
}
