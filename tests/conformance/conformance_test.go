package conformance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
)

func TestSnapshotterSuite(t *testing.T) {
	if os.Geteuid() != 0 {
		// The suite mounts every snapshot it makes; without root every case
		// would fail for a reason that has nothing to do with the daemon.
		t.Fatal("the conformance suite needs root (it mounts snapshots)")
	}
	bin := os.Getenv("WASMSNAP_BIN")
	if bin == "" {
		t.Fatal("WASMSNAP_BIN is not set: name the daemon binary to test")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("WASMSNAP_BIN=%q: %v", bin, err)
	}
	name := os.Getenv("WASMSNAP_SNAPSHOTTER")
	if name == "" {
		name = "overlay"
	}
	startTimeout := 60 * time.Second
	if s := os.Getenv("WASMSNAP_START_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("WASMSNAP_START_TIMEOUT=%q: %v", s, err)
		}
		startTimeout = d
	}

	testsuite.SnapshotterSuite(t, name, daemonSnapshotter(bin, name, startTimeout))
}

// daemonSnapshotter starts a fresh daemon under the case's root and hands
// the suite a proxy snapshotter talking to it. The cleanup stops the daemon
// and reports an error unless it exited 0 on SIGTERM.
func daemonSnapshotter(bin, name string, startTimeout time.Duration) testsuite.SnapshotterFunc {
	return func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		socket := filepath.Join(root, "wasmsnap.sock")
		d, err := startDaemon(bin, filepath.Join(root, "wasmsnap"), socket, startTimeout)
		if err != nil {
			return nil, nil, err
		}
		conn, err := dialContainerdStyle(socket)
		if err != nil {
			stopErr := d.stop()
			return nil, nil, fmt.Errorf("dial %s: %w (daemon stop: %v)\n%s", socket, err, stopErr, d.logText())
		}
		sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), name)

		cleanup := func() error {
			closeErr := conn.Close()
			stopErr := d.stop()
			if stopErr != nil {
				return fmt.Errorf("%w\n%s", stopErr, d.logText())
			}
			showLogIfFailed(ctx, d)
			if closeErr != nil {
				return fmt.Errorf("closing the grpc connection: %w", closeErr)
			}
			return nil
		}
		return sn, cleanup, nil
	}
}

// showLogIfFailed prints the daemon's log under a failed case; a passing
// case stays quiet.
func showLogIfFailed(ctx context.Context, d *daemon) {
	header := fmt.Sprintf("log of %s", strings.Join(d.cmd.Args, " "))
	if tb := caseT(ctx); tb != nil {
		if tb.Failed() {
			tb.Logf("%s:\n%s", header, d.logText())
		}
		return
	}
	// Without the case's T, log through the suite's logger: `go test` shows
	// it only for failed cases (or with -v), one logrus record per line.
	log.G(ctx).Info(header)
	for _, line := range strings.Split(strings.TrimRight(d.logText(), "\n"), "\n") {
		log.G(ctx).Info(line)
	}
}
