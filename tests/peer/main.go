// Command peer serves containerd's own overlayfs and native snapshotters
// over the containerd Snapshots gRPC API on a unix socket, the way a
// proxy_plugins snapshotter is served. It is the yardstick wasmsnap is
// measured against: the conformance baseline and the benchmark peer.
//
//	peer [serve] --root DIR --address SOCKET
//
// The optional `serve` makes its command line the same as `wasmsnap serve`,
// so a harness can start either one.
//
// Snapshotter names are "overlay" and "native", chosen by each request's
// snapshotter field. Overlay is configured as containerd's overlayfs plugin
// configures it (asynchronous remove: Remove leaves the directories to
// Cleanup). SIGTERM or SIGINT stops the server gracefully and exits 0.
//
// It is built offline in GOPATH mode from Debian's packages; see
// tests/conformance/run.sh.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/native"
	"github.com/containerd/containerd/snapshots/overlay"
	"google.golang.org/grpc"
)

func main() {
	root := flag.String("root", "", "directory holding one root per snapshotter (created if missing)")
	address := flag.String("address", "", "unix socket to serve on (parent directories are created)")
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "serve" {
		args = args[1:]
	}
	if err := flag.CommandLine.Parse(args); err != nil {
		fail(err)
	}
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected arguments %q; usage: peer [serve] --root DIR --address SOCKET", flag.Args()))
	}
	if *root == "" || *address == "" {
		fail(fmt.Errorf("both --root and --address are required; usage: peer [serve] --root DIR --address SOCKET"))
	}
	if err := run(*root, *address); err != nil {
		fail(err)
	}
}

func run(root, address string) error {
	served, err := openSnapshotters(root)
	if err != nil {
		return err
	}
	defer served.close()

	listener, err := listenUnix(address)
	if err != nil {
		return err
	}
	server := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(server, served.dispatcher())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	serveErr := make(chan error, 1)
	go func() { serveErr <- server.Serve(listener) }()
	fmt.Fprintf(os.Stderr, "peer: serving %v on %s\n", served.names, address)

	select {
	case sig := <-stop:
		fmt.Fprintf(os.Stderr, "peer: %v, stopping\n", sig)
		server.GracefulStop()
		return nil
	case err := <-serveErr:
		return fmt.Errorf("serving on %s: %w", address, err)
	}
}

// snapshotterSet is every snapshotter the peer serves, by name.
type snapshotterSet struct {
	names  []string
	byName map[string]snapshots.Snapshotter
}

func openSnapshotters(root string) (*snapshotterSet, error) {
	set := &snapshotterSet{byName: map[string]snapshots.Snapshotter{}}
	ov, err := overlay.NewSnapshotter(filepath.Join(root, "overlay"), overlay.AsynchronousRemove)
	if err != nil {
		return nil, fmt.Errorf("overlay snapshotter at %s: %w", filepath.Join(root, "overlay"), err)
	}
	set.add("overlay", ov)
	nv, err := native.NewSnapshotter(filepath.Join(root, "native"))
	if err != nil {
		set.close()
		return nil, fmt.Errorf("native snapshotter at %s: %w", filepath.Join(root, "native"), err)
	}
	set.add("native", nv)
	return set, nil
}

func (s *snapshotterSet) add(name string, sn snapshots.Snapshotter) {
	s.names = append(s.names, name)
	s.byName[name] = sn
}

func (s *snapshotterSet) dispatcher() snapshotsapi.SnapshotsServer {
	d := dispatcher{names: s.names, services: map[string]snapshotsapi.SnapshotsServer{}}
	for name, sn := range s.byName {
		d.services[name] = snapshotservice.FromSnapshotter(sn)
	}
	return d
}

func (s *snapshotterSet) close() {
	for _, name := range s.names {
		if err := s.byName[name].Close(); err != nil {
			fmt.Fprintf(os.Stderr, "peer: closing %s: %v\n", name, err)
		}
	}
}

// listenUnix creates the socket's parent directories and replaces a stale
// socket left by a previous run (but never any other kind of file).
func listenUnix(address string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(address), 0o755); err != nil {
		return nil, fmt.Errorf("creating the parent of %s: %w", address, err)
	}
	if st, err := os.Lstat(address); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", address)
		}
		if err := os.Remove(address); err != nil {
			return nil, fmt.Errorf("removing the stale socket %s: %w", address, err)
		}
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", address, err)
	}
	return l, nil
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "peer: %v\n", err)
	os.Exit(1)
}
