//! wasmsnap: a WebAssembly-pluggable snapshotter for containerd.
