//! A hostile policy for the sandbox tests: it tries, on request, what a
//! policy must never get away with.
//!
//! Config `do` picks the act and `in` the function it happens in (`init`,
//! `layout` or `mounts`, default `mounts`); per snapshot the label
//! `containerd.io/snapshot/wasmsnap-test.do` picks an act for `layout` and
//! `mounts` instead. Otherwise the plan is good: own `fs`, bound
//! read-write (read-only for a view).
//!
//! Acts:
//! - `loop`: spin forever (the epoch deadline must stop it);
//! - `panic`: panic with a known message (it must reach the error);
//! - `alloc`: allocate up to 4 GiB, 64 MiB at a time (the memory limit);
//! - `fill`: allocate and touch 1 MiB at a time until the memory limit
//!   stops it (so the instance really holds its limit in host memory);
//! - `huge-plan`: return a plan of over 1 MB;
//! - `sleep`: sleep for an hour (waiting on a clock must be refused);
//! - `open-file`, `list-root`, `open-socket`, `read-env`: try to reach
//!   outside; the answer is a declared `failed` error whose message says
//!   `denied:` with what the sandbox answered, or `ESCAPED:` if it worked;
//! - `recurse`: recurse without end (exhausts the stack in linear memory);
//! - `shout`: write 1 MiB to stderr, then answer a good plan;
//! - `declare-huge`: declare an error of 3 MiB that starts with terminal
//!   escapes and a forged log line (the host must escape and cap it);
//! - `panic-escape`: panic with terminal escapes and a newline;
//! - `huge-string`: return a plan with one option of 8 MiB (more than the
//!   host lifts out of a guest in one call).

use std::io::Write;
use wasmsnap_guest::*;

pub const LABEL: &str = "containerd.io/snapshot/wasmsnap-test.do";
pub const PANIC_MESSAGE: &str = "hostile policy panics on purpose";
/// Clears a terminal, turns it red and starts a forged log line.
pub const FORGED: &str = "\x1b[2J\x1b[31mhostile\nlevel=ERROR msg=forged-by-policy ";

pub struct Hostile {
    act: Option<String>,
    place: String,
}

impl Policy for Hostile {
    fn init(config: &Config, _facts: &HostFacts) -> Result<Self, PolicyError> {
        config.only(&["do", "in"])?;
        let policy = Hostile {
            act: config.get("do").map(String::from),
            place: config.get("in").unwrap_or("mounts").to_string(),
        };
        if policy.place == "init"
            && let Some(act) = &policy.act
        {
            act_out::<()>(act)?;
        }
        Ok(policy)
    }

    fn layout(&self, s: &Snapshot) -> Result<Layout, PolicyError> {
        if let Some(act) = self.act_for(s, "layout") {
            act_out::<()>(act)?;
        }
        Ok(LayoutBuilder::new().mkdir("fs", 0o755).content("fs").build())
    }

    fn mounts(&self, s: &Snapshot) -> Result<Vec<Mount>, PolicyError> {
        if let Some(act) = self.act_for(s, "mounts") {
            if act == "huge-plan" {
                return Ok(huge_plan(s));
            }
            if act == "huge-string" {
                let option = "x".repeat(8 << 20);
                return Ok(vec![Mount::Bind(BindMount {
                    source: s.dir("fs"),
                    readonly: s.is_view(),
                    options: vec![option],
                    id_mapped: false,
                })]);
            }
            act_out::<()>(act)?;
        }
        Ok(vec![bind(s.dir("fs"), s.is_view())])
    }
}

impl Hostile {
    fn act_for<'a>(&'a self, s: &'a Snapshot, place: &str) -> Option<&'a str> {
        if let Some(act) = s.label(LABEL) {
            return Some(act);
        }
        if self.place == place { self.act.as_deref() } else { None }
    }
}

/// Do `act`; the acts that return at all return a declared error.
fn act_out<T>(act: &str) -> Result<T, PolicyError> {
    match act {
        "loop" => spin(),
        "panic" => panic!("{PANIC_MESSAGE}"),
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            for _ in 0..64 {
                hoard.push(vec![1u8; 64 << 20]);
            }
            Err(PolicyError::Failed(format!("ESCAPED: allocated {} MiB", hoard.len() * 64)))
        }
        "fill" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            for _ in 0..4096 {
                hoard.push(vec![1u8; 1 << 20]);
            }
            Err(PolicyError::Failed(format!("ESCAPED: filled {} MiB", hoard.len())))
        }
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            Err(PolicyError::Failed("ESCAPED: slept".into()))
        }
        "recurse" => Err(PolicyError::Failed(format!("ESCAPED: recursed {}", recurse(0)))),
        "open-file" => reach("open /etc/passwd", || {
            std::fs::read("/etc/passwd").map(|b| format!("{} bytes", b.len()))
        }),
        "list-root" => {
            reach("list /", || std::fs::read_dir("/").map(|d| format!("{} entries", d.count())))
        }
        "open-socket" => reach("connect 127.0.0.1:22", || {
            std::net::TcpStream::connect("127.0.0.1:22").map(|_| "connected".to_string())
        }),
        "read-env" => {
            let (vars, args) = (std::env::vars().count(), std::env::args().count());
            if vars == 0 && args == 0 {
                Err(PolicyError::Failed("denied: no env, no args".into()))
            } else {
                Err(PolicyError::Failed(format!("ESCAPED: {vars} vars, {args} args")))
            }
        }
        "shout" => {
            let line = [b'!'; 1023];
            let mut err = std::io::stderr();
            for _ in 0..1024 {
                let _ = err.write_all(&line);
                let _ = err.write_all(b"\n");
            }
            let _ = writeln!(err, "hostile policy finished shouting");
            Err(PolicyError::Failed("shouted".into()))
        }
        "declare-huge" => Err(PolicyError::Failed(format!("{FORGED}{}", "x".repeat(3 << 20)))),
        "panic-escape" => panic!("{FORGED}"),
        other => Err(PolicyError::InvalidConfig(format!("unknown act {other:?}"))),
    }
}

/// Try to reach outside the sandbox and say how it went.
fn reach<T>(
    what: &str,
    attempt: impl FnOnce() -> std::io::Result<String>,
) -> Result<T, PolicyError> {
    match attempt() {
        Ok(got) => Err(PolicyError::Failed(format!("ESCAPED: {what}: {got}"))),
        Err(e) => Err(PolicyError::Failed(format!("denied: {what}: {e}"))),
    }
}

/// Over 1 MB of plan: 2048 mounts of 512-byte option lists.
fn huge_plan(s: &Snapshot) -> Vec<Mount> {
    let options: Vec<String> = (0..8).map(|i| format!("o{i}={}", "x".repeat(60))).collect();
    (0..2048)
        .map(|_| {
            Mount::Bind(BindMount {
                source: s.dir("fs"),
                readonly: s.is_view(),
                options: options.clone(),
                id_mapped: false,
            })
        })
        .collect()
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    recurse(frame[3] + 1) + frame[0]
}

export_policy!(Hostile);
