package main

// The workload of host/bench/src/workload.rs, call for call: same keys,
// labels, order and counts, so the two clients measure the same thing.

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/snapshots"
)

// Op names as host/bench/src/go_client.rs reads them.
const (
	opPrepareCommit = "prepare+commit"
	opPrepare       = "prepare"
	opCommit        = "commit"
	opStat          = "stat"
	opList          = "list"
	opView          = "view"
	opMounts        = "mounts"
	opRemoveView    = "remove views"
	opChurn         = "churn"
	opRemoveChain   = "remove chain"
)

// listRepeats is how many times the whole list is walked.
const listRepeats = 50

type shape struct {
	depth, workers, churnPerWorker int
}

// views made on top of the chain (and later removed).
func (s shape) views() int {
	if s.depth > 32 {
		return 32
	}
	return s.depth
}

// statPasses over the layers, so that p99 has samples behind it.
func (s shape) statPasses() int { return max(500/s.depth, 1) }

func (s shape) mountsPasses() int { return max(500/s.views(), 1) }

func max(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// opSamples is one operation's samples of one run (stats::Samples).
type opSamples struct {
	// WallNs is the phase's wall time (for churn: first start to last end),
	// which ops/s is measured against; for the chain's rows, the sum of its latencies.
	WallNs      int64   `json:"wall_ns"`
	LatenciesNs []int64 `json:"latencies_ns"`
}

func (s *opSamples) add(d time.Duration) { s.LatenciesNs = append(s.LatenciesNs, int64(d)) }

func (s *opSamples) wallIsSum() {
	s.WallNs = 0
	for _, l := range s.LatenciesNs {
		s.WallNs += l
	}
}

func run(ctx context.Context, sn snapshots.Snapshotter, prefix string, sh shape) (map[string]*opSamples, error) {
	out := map[string]*opSamples{}
	layer := func(i int) string { return fmt.Sprintf("%s/sha256:%064x", prefix, i) }
	labels := func(i int) snapshots.Opt {
		return snapshots.WithLabels(map[string]string{"containerd.io/snapshot.ref": fmt.Sprintf("sha256:%064x", i)})
	}

	// An unpack: prepare on top of the previous layer, commit it.
	pairs, prepares, commits := &opSamples{}, &opSamples{}, &opSamples{}
	for i := 0; i < sh.depth; i++ {
		key := fmt.Sprintf("%s/extract-%d sha256:%064x", prefix, i, i)
		parent := ""
		if i > 0 {
			parent = layer(i - 1)
		}
		started := time.Now()
		if _, err := sn.Prepare(ctx, key, parent, labels(i)); err != nil {
			return nil, fmt.Errorf("prepare %s: %w", key, err)
		}
		prepared := time.Now()
		if err := sn.Commit(ctx, layer(i), key, labels(i)); err != nil {
			return nil, fmt.Errorf("commit %s: %w", key, err)
		}
		done := time.Now()
		prepares.add(prepared.Sub(started))
		commits.add(done.Sub(prepared))
		pairs.add(done.Sub(started))
	}
	for _, s := range []*opSamples{pairs, prepares, commits} {
		s.wallIsSum()
	}
	out[opPrepareCommit], out[opPrepare], out[opCommit] = pairs, prepares, commits
	top := layer(sh.depth - 1)

	var err error
	if out[opStat], err = sequential(sh.statPasses()*sh.depth, func(n int) error {
		key := layer(n % sh.depth)
		if _, err := sn.Stat(ctx, key); err != nil {
			return fmt.Errorf("stat %s: %w", key, err)
		}
		return nil
	}); err != nil {
		return nil, err
	}

	if out[opList], err = sequential(listRepeats, func(int) error {
		seen := 0
		if err := sn.Walk(ctx, func(context.Context, snapshots.Info) error { seen++; return nil }); err != nil {
			return fmt.Errorf("list: %w", err)
		}
		if seen < sh.depth {
			return fmt.Errorf("list returned %d snapshots, expected at least %d", seen, sh.depth)
		}
		return nil
	}); err != nil {
		return nil, err
	}

	view := func(j int) string { return fmt.Sprintf("%s/view-%d", prefix, j) }
	if out[opView], err = sequential(sh.views(), func(j int) error {
		if _, err := sn.View(ctx, view(j), top); err != nil {
			return fmt.Errorf("view %s: %w", view(j), err)
		}
		return nil
	}); err != nil {
		return nil, err
	}

	if out[opMounts], err = sequential(sh.mountsPasses()*sh.views(), func(n int) error {
		key := view(n % sh.views())
		mounts, err := sn.Mounts(ctx, key)
		if err != nil {
			return fmt.Errorf("mounts %s: %w", key, err)
		}
		if len(mounts) == 0 {
			return fmt.Errorf("mounts of %s: none", key)
		}
		return nil
	}); err != nil {
		return nil, err
	}

	if out[opRemoveView], err = sequential(sh.views(), func(j int) error {
		return remove(ctx, sn, view(j))
	}); err != nil {
		return nil, err
	}

	if out[opChurn], err = churn(ctx, sn, prefix, top, sh); err != nil {
		return nil, err
	}

	if out[opRemoveChain], err = sequential(sh.depth, func(n int) error {
		return remove(ctx, sn, layer(sh.depth-1-n))
	}); err != nil {
		return nil, err
	}

	// Untimed. containerd's native snapshotter has no Cleanup (its Remove deletes).
	if cleaner, ok := sn.(snapshots.Cleaner); ok {
		if err := cleaner.Cleanup(ctx); err != nil && !errdefs.IsNotImplemented(err) {
			return nil, fmt.Errorf("cleanup after the run: %w", err)
		}
	}
	return out, nil
}

// sequential makes n calls one after the other, each timed.
func sequential(n int, call func(int) error) (*opSamples, error) {
	s := &opSamples{LatenciesNs: make([]int64, 0, n)}
	phase := time.Now()
	for i := 0; i < n; i++ {
		started := time.Now()
		if err := call(i); err != nil {
			return nil, err
		}
		s.add(time.Since(started))
	}
	s.WallNs = int64(time.Since(phase))
	return s, nil
}

func remove(ctx context.Context, sn snapshots.Snapshotter, key string) error {
	if err := sn.Remove(ctx, key); err != nil {
		return fmt.Errorf("remove %s: %w", key, err)
	}
	return nil
}

// churn runs sh.workers goroutines, each doing Prepare+Remove pairs on top
// of the chain (containers starting and going away) over the one connection.
func churn(ctx context.Context, sn snapshots.Snapshotter, prefix, top string, sh shape) (*opSamples, error) {
	latencies := make([][]int64, sh.workers)
	errs := make([]error, sh.workers)
	var wg sync.WaitGroup
	phase := time.Now()
	for w := 0; w < sh.workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < sh.churnPerWorker; i++ {
				key := fmt.Sprintf("%s/churn-%d-%d", prefix, w, i)
				started := time.Now()
				if _, err := sn.Prepare(ctx, key, top); err != nil {
					errs[w] = fmt.Errorf("churn prepare %s: %w", key, err)
					return
				}
				if err := remove(ctx, sn, key); err != nil {
					errs[w] = err
					return
				}
				latencies[w] = append(latencies[w], int64(time.Since(started)))
			}
		}(w)
	}
	wg.Wait()
	s := &opSamples{WallNs: int64(time.Since(phase))}
	for w := range latencies {
		if errs[w] != nil {
			return nil, errs[w]
		}
		s.LatenciesNs = append(s.LatenciesNs, latencies[w]...)
	}
	return s, nil
}
