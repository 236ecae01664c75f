// Command goclient runs wasmsnap's benchmark workload (host/bench/src/workload.rs)
// against a snapshotter socket through containerd's own proxy snapshotter
// client, dialled the way containerd dials a proxy_plugins snapshotter, and
// prints every operation's latencies as JSON. `wasmsnap bench --go-client`
// starts it once per run and target.
//
//	goclient -address SOCKET -snapshotter NAME -prefix P -depth N -workers W -churn PAIRS
//
// Stdout is one JSON object: op name to {"wall_ns": N, "latencies_ns": [...]}
// (op names as in workload.go; churn latencies are per prepare+remove pair).
// A failed call exits 1 with the op and key on stderr.
//
// It is built offline in GOPATH mode from Debian's packages; see
// tests/conformance/run.sh.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/defaults"
	"github.com/containerd/containerd/pkg/dialer"
	"github.com/containerd/containerd/snapshots/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// connectTimeout bounds the untimed wait for the socket before the workload.
const connectTimeout = 30 * time.Second

func main() {
	address := flag.String("address", "", "unix socket of the snapshotter server")
	name := flag.String("snapshotter", "overlay", "snapshotter name sent in every request")
	prefix := flag.String("prefix", "", "prefix of every key, so runs do not collide")
	depth := flag.Int("depth", 32, "layers in the prepare+commit chain")
	workers := flag.Int("workers", 8, "concurrent workers in the churn phase")
	churn := flag.Int("churn", 25, "prepare+remove pairs per churn worker")
	flag.Parse()
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected arguments %q", flag.Args()))
	}
	if *address == "" || *prefix == "" {
		fail(errors.New("-address and -prefix are required"))
	}
	if *depth < 1 || *workers < 1 || *churn < 0 {
		fail(fmt.Errorf("-depth %d and -workers %d must be at least 1, -churn %d not negative", *depth, *workers, *churn))
	}

	conn, err := dial(*address)
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), *name)
	shape := shape{depth: *depth, workers: *workers, churnPerWorker: *churn}
	samples, err := run(context.Background(), sn, *prefix, shape)
	if err != nil {
		fail(err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(samples); err != nil {
		fail(fmt.Errorf("writing the samples: %w", err))
	}
}

// dial connects with containerd's options for a proxy_plugins snapshotter
// (services/server: getClient). WithBlock only makes the connection before
// the first timed call, as the Rust client does; containerd dials lazily.
func dial(socket string) (*grpc.ClientConn, error) {
	backoffConfig := backoff.DefaultConfig
	backoffConfig.MaxDelay = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	conn, err := grpc.DialContext(ctx, dialer.DialAddress(socket),
		grpc.WithInsecure(),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoffConfig}),
		grpc.WithContextDialer(dialer.ContextDialer),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(defaults.DefaultMaxRecvMsgSize)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(defaults.DefaultMaxSendMsgSize)),
		grpc.WithBlock(),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", socket, err)
	}
	return conn, nil
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "goclient: %v\n", err)
	os.Exit(1)
}
