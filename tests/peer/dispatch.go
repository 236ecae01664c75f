package main

import (
	"context"
	"strings"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	ptypes "github.com/gogo/protobuf/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// dispatcher routes each request to the snapshotter its `snapshotter` field
// names. containerd's snapshotservice serves one snapshotter and ignores
// that field, so serving two on one socket needs this switch.
type dispatcher struct {
	names    []string
	services map[string]snapshotsapi.SnapshotsServer
}

func (d dispatcher) pick(name string) (snapshotsapi.SnapshotsServer, error) {
	if s, ok := d.services[name]; ok {
		return s, nil
	}
	return nil, status.Errorf(codes.NotFound, "snapshotter %q is not served here; served: %s", name, strings.Join(d.names, ", "))
}

func (d dispatcher) Prepare(ctx context.Context, r *snapshotsapi.PrepareSnapshotRequest) (*snapshotsapi.PrepareSnapshotResponse, error) {
	s, err := d.pick(r.Snapshotter)
	if err != nil {
		return nil, err
	}
	return s.Prepare(ctx, r)
}

func (d dispatcher) View(ctx context.Context, r *snapshotsapi.ViewSnapshotRequest) (*snapshotsapi.ViewSnapshotResponse, error) {
	s, err := d.pick(r.Snapshotter)
	if err != nil {
		return nil, err
	}
	return s.View(ctx, r)
}

func (d dispatcher) Mounts(ctx context.Context, r *snapshotsapi.MountsRequest) (*snapshotsapi.MountsResponse, error) {
	s, err := d.pick(r.Snapshotter)
	if err != nil {
		return nil, err
	}
	return s.Mounts(ctx, r)
}

func (d dispatcher) Commit(ctx context.Context, r *snapshotsapi.CommitSnapshotRequest) (*ptypes.Empty, error) {
	s, err := d.pick(r.Snapshotter)
	if err != nil {
		return nil, err
	}
	return s.Commit(ctx, r)
}

func (d dispatcher) Remove(ctx context.Context, r *snapshotsapi.RemoveSnapshotRequest) (*ptypes.Empty, error) {
	s, err := d.pick(r.Snapshotter)
	if err != nil {
		return nil, err
	}
	return s.Remove(ctx, r)
}

func (d dispatcher) Stat(ctx context.Context, r *snapshotsapi.StatSnapshotRequest) (*snapshotsapi.StatSnapshotResponse, error) {
	s, err := d.pick(r.Snapshotter)
	if err != nil {
		return nil, err
	}
	return s.Stat(ctx, r)
}

func (d dispatcher) Update(ctx context.Context, r *snapshotsapi.UpdateSnapshotRequest) (*snapshotsapi.UpdateSnapshotResponse, error) {
	s, err := d.pick(r.Snapshotter)
	if err != nil {
		return nil, err
	}
	return s.Update(ctx, r)
}

func (d dispatcher) List(r *snapshotsapi.ListSnapshotsRequest, stream snapshotsapi.Snapshots_ListServer) error {
	s, err := d.pick(r.Snapshotter)
	if err != nil {
		return err
	}
	return s.List(r, stream)
}

func (d dispatcher) Usage(ctx context.Context, r *snapshotsapi.UsageRequest) (*snapshotsapi.UsageResponse, error) {
	s, err := d.pick(r.Snapshotter)
	if err != nil {
		return nil, err
	}
	return s.Usage(ctx, r)
}

func (d dispatcher) Cleanup(ctx context.Context, r *snapshotsapi.CleanupRequest) (*ptypes.Empty, error) {
	s, err := d.pick(r.Snapshotter)
	if err != nil {
		return nil, err
	}
	return s.Cleanup(ctx, r)
}
