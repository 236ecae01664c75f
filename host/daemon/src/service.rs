//! The snapshotters this daemon serves, by the name containerd puts in each
//! request's `snapshotter` field (the seed's `map[string]Snapshotter`).
//!
//! A configured snapshotter that could not be opened (its policy failed to
//! load or `init`, its metastore could not be opened) is still listed, as
//! unavailable: every call to it answers Unavailable with the reason, and
//! the others serve normally. A reload (SIGHUP) tries to open it again.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, Weak};

use crate::error::Error;
use crate::snapshotter::Snapshotter;

/// One configured snapshotter: serving, or unavailable and why.
#[derive(Clone)]
pub enum Slot {
    Serving(Arc<Snapshotter>),
    /// The reason, naming the policy or the metastore file.
    Unavailable(Arc<str>),
}

#[derive(Clone, Default)]
pub struct Service {
    snapshotters: Arc<BTreeMap<String, RwLock<Slot>>>,
}

/// A handle that does not keep the snapshotters open: what an observer
/// that lives as long as the process (the metrics) holds, so that at
/// shutdown the snapshotters still close (their metastores drop cleanly).
#[derive(Clone, Default)]
pub struct WeakService {
    snapshotters: Weak<BTreeMap<String, RwLock<Slot>>>,
}

impl WeakService {
    /// The service, unless it has shut down.
    pub fn upgrade(&self) -> Option<Service> {
        self.snapshotters.upgrade().map(|snapshotters| Service { snapshotters })
    }
}

impl Service {
    /// Every configured snapshotter by name: opened, or why it was not.
    pub fn new(
        snapshotters: impl IntoIterator<Item = (String, Result<Snapshotter, String>)>,
    ) -> Service {
        let map = snapshotters
            .into_iter()
            .map(|(name, opened)| {
                let slot = match opened {
                    Ok(s) => Slot::Serving(Arc::new(s)),
                    Err(reason) => Slot::Unavailable(reason.into()),
                };
                (name, RwLock::new(slot))
            })
            .collect();
        Service { snapshotters: Arc::new(map) }
    }

    /// The snapshotter called `name`; NotFound lists the served names,
    /// Unavailable says why that one is not open.
    pub fn get(&self, name: &str) -> Result<Arc<Snapshotter>, Error> {
        match self.slot(name)? {
            Slot::Serving(s) => Ok(s),
            Slot::Unavailable(reason) => Err(Error::SnapshotterUnavailable(format!(
                "snapshotter {name:?} is unavailable: {reason} (fix it and reload with SIGHUP)"
            ))),
        }
    }

    /// What `name` is now: serving or unavailable.
    pub fn slot(&self, name: &str) -> Result<Slot, Error> {
        let slot = self.snapshotters.get(name).ok_or_else(|| {
            Error::NotFound(format!(
                "snapshotter {name:?} not found (served: {})",
                self.names().collect::<Vec<_>>().join(", ")
            ))
        })?;
        Ok(slot.read().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// Put an unavailable snapshotter in service (a reload opened it).
    pub fn revive(&self, snapshotter: Snapshotter) {
        if let Some(slot) = self.snapshotters.get(snapshotter.name()) {
            *slot.write().unwrap_or_else(PoisonError::into_inner) =
                Slot::Serving(Arc::new(snapshotter));
        }
    }

    /// A handle that does not keep the snapshotters open.
    pub fn downgrade(&self) -> WeakService {
        WeakService { snapshotters: Arc::downgrade(&self.snapshotters) }
    }

    /// Every configured name, serving or not.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.snapshotters.keys().map(String::as_str)
    }

    /// The names of the unavailable snapshotters.
    pub fn unavailable(&self) -> Vec<String> {
        self.names()
            .filter(|n| matches!(self.slot(n), Ok(Slot::Unavailable(_))))
            .map(String::from)
            .collect()
    }

    /// The snapshotters serving now.
    pub fn serving(&self) -> Vec<Arc<Snapshotter>> {
        self.names().filter_map(|n| self.get(n).ok()).collect()
    }
}
