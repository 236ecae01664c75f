//! A policy that misbehaves on request, for the harness's own tests.
//!
//! Otherwise a plain bind policy (own `fs`, rw; ro for a view). The label
//! `wasmsnap.test/misbehave` picks how it fails, in `layout` or `mounts`
//! (`<how>-<where>`, e.g. `trap-mounts`):
//! - `trap`: panics (the host sees a trap; the message is on stderr);
//! - `declare`: returns a declared `failed` error;
//! - `invalid`: returns a plan the host must refuse (a layout step named
//!   `..`, or a mount of a snapshot that is not a parent);
//! - `spin`: loops forever (the host's timeout must stop it).
//!
//! Config: `refuse = "<reason>"` makes `init` refuse with `invalid-config`.

use wasmsnap_guest::*;

pub const LABEL: &str = "wasmsnap.test/misbehave";

pub struct Misbehave;

impl Policy for Misbehave {
    fn init(config: &Config, _facts: &HostFacts) -> Result<Self, PolicyError> {
        config.only(&["refuse"])?;
        match config.get("refuse") {
            Some(reason) => {
                Err(PolicyError::InvalidConfig(format!("refused on request: {reason}")))
            }
            None => Ok(Misbehave),
        }
    }

    fn layout(&self, s: &Snapshot) -> Result<Layout, PolicyError> {
        if let Some(early) =
            misbehave(s, "layout", || LayoutBuilder::new().mkdir("..", 0o755).build())
        {
            return early;
        }
        Ok(LayoutBuilder::new().mkdir("fs", 0o755).content("fs").build())
    }

    fn mounts(&self, s: &Snapshot) -> Result<Vec<Mount>, PolicyError> {
        let foreign = DirRef { snapshot: s.id + 1000, name: "fs".into() };
        if let Some(early) = misbehave(s, "mounts", || vec![bind(foreign, true)]) {
            return early;
        }
        Ok(vec![bind(s.dir("fs"), s.is_view())])
    }
}

/// The early answer of `call` when the label asks it to fail: `invalid`
/// builds the bad plan returned in place of the good one.
fn misbehave<T>(
    s: &Snapshot,
    call: &str,
    invalid: impl FnOnce() -> T,
) -> Option<Result<T, PolicyError>> {
    let how = s.label(LABEL)?.strip_suffix(call)?.strip_suffix('-')?;
    Some(match how {
        "trap" => panic!("misbehave: trap in {call} of snapshot {} as asked", s.id),
        "declare" => Err(PolicyError::Failed(format!("misbehave: declared failure in {call}"))),
        "invalid" => Ok(invalid()),
        "spin" => spin(),
        other => Err(PolicyError::Failed(format!("misbehave: unknown way to fail {other:?}"))),
    })
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

export_policy!(Misbehave);
