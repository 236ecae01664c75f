package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/defaults"
	"github.com/containerd/containerd/pkg/dialer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// stopTimeout bounds how long a daemon may take to exit after SIGTERM.
const stopTimeout = 30 * time.Second

// daemon is one running `serve` process and everything it wrote.
type daemon struct {
	cmd    *exec.Cmd
	log    *lockedBuffer
	exited chan struct{} // closed once the process has been reaped
	err    error         // the process's exit error, valid after exited
	once   sync.Once
	result error // what stop() reported the first time
}

func startDaemon(bin, root, socket string, startTimeout time.Duration) (*daemon, error) {
	d := &daemon{log: &lockedBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(bin, "serve", "--root", root, "--address", socket)
	// Plain text logs: they end up in test output, not on a terminal.
	d.cmd.Env = append(os.Environ(), "NO_COLOR=1")
	d.cmd.Stdout = d.log
	d.cmd.Stderr = d.log
	// If the test binary dies, the daemon must not outlive it holding mounts.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	if err := d.waitForSocket(socket, startTimeout); err != nil {
		stopErr := d.stop()
		return nil, fmt.Errorf("%s serve: %w (stop: %v)\n%s", bin, err, stopErr, d.logText())
	}
	return d, nil
}

// waitForSocket returns once the socket accepts connections, or fails when
// the daemon exits first or the timeout passes.
func (d *daemon) waitForSocket(socket string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("exited before opening %s: %v", socket, d.err)
		default:
		}
		if conn, err := net.Dial("unix", socket); err == nil {
			conn.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no socket at %s after %s", socket, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits; anything but a clean exit 0 is an error.
func (d *daemon) stop() error {
	d.once.Do(func() { d.result = d.terminate() })
	return d.result
}

func (d *daemon) terminate() error {
	select {
	case <-d.exited:
		return fmt.Errorf("daemon exited before it was stopped: %v", describeExit(d.err))
	default:
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	select {
	case <-d.exited:
	case <-time.After(stopTimeout):
		_ = d.cmd.Process.Kill()
		<-d.exited
		return fmt.Errorf("daemon did not exit within %s of SIGTERM; killed", stopTimeout)
	}
	if d.err != nil {
		return fmt.Errorf("daemon did not exit 0 on SIGTERM: %v", describeExit(d.err))
	}
	return nil
}

func describeExit(err error) string {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Sprintf("killed by signal %v", ws.Signal())
		}
		return fmt.Sprintf("exit status %d", exit.ExitCode())
	}
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func (d *daemon) logText() string {
	text := d.log.String()
	if text == "" {
		return "(the daemon wrote nothing)"
	}
	return text
}

// dialContainerdStyle connects the way containerd connects to a
// proxy_plugins snapshotter (services/server: getClient), so the daemon is
// tested against the same HTTP/2 authority, dialer and message limits.
func dialContainerdStyle(socket string) (*grpc.ClientConn, error) {
	backoffConfig := backoff.DefaultConfig
	backoffConfig.MaxDelay = 3 * time.Second
	return grpc.Dial(dialer.DialAddress(socket),
		grpc.WithInsecure(),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoffConfig}),
		grpc.WithContextDialer(dialer.ContextDialer),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(defaults.DefaultMaxRecvMsgSize)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(defaults.DefaultMaxSendMsgSize)),
	)
}

// lockedBuffer collects the daemon's stdout and stderr from two copier
// goroutines and is read by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
