//! Spare directories: the empty directories of a layout made ahead of time,
//! durable, under a claimed `new-*` name in `<root>/spares/` (beside
//! `snapshots/`, on the same file system). A Prepare whose layout has that
//! shape then only renames a spare into place and fsyncs `snapshots/` on
//! its reply path; the mkdirs and their fsyncs (one per directory on a file
//! system without an ordered journal) happened earlier, in the background.
//!
//! The crash order is unchanged: a spare is durable before it is used, the
//! rename into place is durable before the caller commits the record, and
//! spares left by a crash are removed when the directory opens.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use wasmsnap_plan::Step;

/// The directories a layout makes, in order: (name, mode).
pub(crate) type Shape = Vec<(String, u32)>;

/// How many shapes keep spares (policies have one or two: active, view).
const SHAPES: usize = 4;

pub(crate) struct Spare {
    /// Its `new-*` name, held in the claims while it waits.
    pub name: OsString,
    pub path: PathBuf,
    /// Owner of the directories in it (whoever runs the daemon).
    pub owner: (u32, u32),
}

#[derive(Default)]
pub(crate) struct Spares {
    /// Most recently used shape last.
    by_shape: Mutex<Vec<(Shape, Vec<Spare>)>>,
}

/// The shape of `steps` if a spare can stand in for running them: mkdirs of
/// distinct names, and chown-like-parent of one of those (which a spare
/// satisfies when the parent's owner is the spare's).
pub(crate) fn shape_of(steps: &[Step]) -> Option<Shape> {
    let mut shape: Shape = Vec::new();
    for step in steps {
        match step {
            Step::Mkdir { name, mode } if !shape.iter().any(|(n, _)| n == name) => {
                shape.push((name.clone(), *mode))
            }
            Step::ChownLikeParent { name } if shape.iter().any(|(n, _)| n == name) => {}
            _ => return None,
        }
    }
    (!shape.is_empty()).then_some(shape)
}

impl Spares {
    pub fn take(&self, shape: &Shape) -> Option<Spare> {
        let mut by_shape = self.by_shape.lock().unwrap_or_else(PoisonError::into_inner);
        let at = by_shape.iter().position(|(s, _)| s == shape)?;
        let entry = by_shape.remove(at);
        let (shape, mut spares) = entry;
        let spare = spares.pop();
        by_shape.push((shape, spares));
        spare
    }

    pub fn count(&self, shape: &Shape) -> usize {
        let by_shape = self.by_shape.lock().unwrap_or_else(PoisonError::into_inner);
        by_shape.iter().find(|(s, _)| s == shape).map_or(0, |(_, v)| v.len())
    }

    /// Adds a spare; returns the spares of a shape pushed out to make room.
    pub fn put(&self, shape: Shape, spare: Spare) -> Vec<Spare> {
        let mut by_shape = self.by_shape.lock().unwrap_or_else(PoisonError::into_inner);
        match by_shape.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, spares)) => spares.push(spare),
            None => by_shape.push((shape, vec![spare])),
        }
        if by_shape.len() > SHAPES { by_shape.remove(0).1 } else { Vec::new() }
    }

    /// Spares of every shape.
    pub fn total(&self) -> usize {
        let by_shape = self.by_shape.lock().unwrap_or_else(PoisonError::into_inner);
        by_shape.iter().map(|(_, v)| v.len()).sum()
    }

    pub fn drain(&self) -> Vec<Spare> {
        let mut by_shape = self.by_shape.lock().unwrap_or_else(PoisonError::into_inner);
        by_shape.drain(..).flat_map(|(_, spares)| spares).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmsnap_plan::CopyMode;

    fn mkdir(name: &str, mode: u32) -> Step {
        Step::Mkdir { name: name.into(), mode }
    }

    #[test]
    fn only_mkdirs_and_their_chowns_have_a_shape() {
        let chown = Step::ChownLikeParent { name: "fs".into() };
        assert_eq!(
            shape_of(&[mkdir("fs", 0o755), mkdir("work", 0o711), chown.clone()]),
            Some(vec![("fs".into(), 0o755), ("work".into(), 0o711)])
        );
        assert_eq!(shape_of(&[chown.clone(), mkdir("fs", 0o755)]), None, "chown before its mkdir");
        assert_eq!(shape_of(&[mkdir("fs", 0o755), mkdir("fs", 0o700)]), None, "a name twice");
        assert_eq!(shape_of(&[Step::CopyParent { name: "fs".into(), mode: CopyMode::Copy }]), None);
        assert_eq!(shape_of(&[]), None);
    }

    #[test]
    fn shapes_are_kept_apart_and_the_oldest_is_pushed_out() {
        let spares = Spares::default();
        let spare = |n: &str| Spare { name: n.into(), path: n.into(), owner: (0, 0) };
        let shape = |n: &str| vec![(n.to_string(), 0o755)];
        assert!(spares.put(shape("a"), spare("a1")).is_empty());
        for s in ["b", "c", "d"] {
            assert!(spares.put(shape(s), spare(s)).is_empty());
        }
        assert_eq!(spares.count(&shape("a")), 1);
        assert_eq!(spares.total(), 4);
        let pushed = spares.put(shape("e"), spare("e1"));
        assert_eq!(
            pushed.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
            vec![OsString::from("a1")]
        );
        assert_eq!(spares.take(&shape("b")).unwrap().name, "b");
        assert!(spares.take(&shape("b")).is_none());
        assert_eq!(spares.drain().len(), 3);
    }
}
