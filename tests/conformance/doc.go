// Package conformance runs containerd's own snapshotter conformance suite
// (snapshots/testsuite) against a snapshotter daemon reached over its unix
// socket through containerd's proxy client, exactly as containerd reaches a
// proxy_plugins snapshotter.
//
// The daemon under test is named by WASMSNAP_BIN and must accept
// `serve --root DIR --address SOCKET`; every case gets a fresh daemon with a
// fresh root. WASMSNAP_SNAPSHOTTER picks the snapshotter name sent in each
// request (default "overlay"). WASMSNAP_START_TIMEOUT (a Go duration,
// default 60s) bounds how long a daemon may take to open its socket.
//
// It is built offline in GOPATH mode from Debian's packages; see run.sh.
package conformance
