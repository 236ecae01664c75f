//! The snapshotters this daemon serves, by the name containerd puts in each
//! request's `snapshotter` field (the seed's `map[string]Snapshotter`).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::Error;
use crate::snapshotter::Snapshotter;

#[derive(Clone, Default)]
pub struct Service {
    snapshotters: Arc<BTreeMap<String, Arc<Snapshotter>>>,
}

impl Service {
    pub fn new(snapshotters: impl IntoIterator<Item = Snapshotter>) -> Service {
        let map = snapshotters.into_iter().map(|s| (s.name().to_string(), Arc::new(s))).collect();
        Service { snapshotters: Arc::new(map) }
    }

    /// The snapshotter called `name`; NotFound lists the served names.
    pub fn get(&self, name: &str) -> Result<Arc<Snapshotter>, Error> {
        self.snapshotters.get(name).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "snapshotter {name:?} not found (served: {})",
                self.names().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.snapshotters.keys().map(String::as_str)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Snapshotter>> {
        self.snapshotters.values()
    }
}
