//! The bad-request battery, over the real gRPC socket: every malformed or
//! forbidden request gets the right code and a message naming what was
//! wrong, changes nothing (the files under the root and every
//! snapshotter's List are compared before and after), and the daemon keeps
//! serving. Also: what looks odd but is valid (keys with NUL, `/`, `..`;
//! thousands of labels) is accepted as plain data, and a request its client
//! cancels before it commits rolls back.

use crate::common;
use crate::stress;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use common::{Daemon, api};
use stress::*;
use tonic::{Code, Status};

const S: &str = "overlay";
const SNAPSHOTTERS: [&str; 3] = ["bind", "native", "overlay"];

/// What a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct State {
    tree: BTreeMap<String, String>,
    lists: BTreeMap<&'static str, Vec<api::Info>>,
}

struct Fixture {
    d: Daemon,
    c: Client,
}

impl Fixture {
    /// A daemon with, in `overlay`: committed `base` <- committed `mid`,
    /// active `act` and view `vw` on `mid`.
    async fn start() -> Fixture {
        let d = Daemon::start();
        let mut c = d.client().await;
        let m = c.prepare(prepare(S, "extract-base", "")).await.unwrap().into_inner().mounts;
        std::fs::write(writable_dir(&m).unwrap().join("file"), b"base content").unwrap();
        c.commit(commit(S, "base", "extract-base")).await.unwrap();
        c.prepare(prepare(S, "extract-mid", "base")).await.unwrap();
        c.commit(commit(S, "mid", "extract-mid")).await.unwrap();
        let mut req = prepare(S, "act", "mid");
        req.labels = labels(&[("containerd.io/gc.root", "x")]);
        c.prepare(req).await.unwrap();
        c.view(view(S, "vw", "mid")).await.unwrap();
        Fixture { d, c }
    }

    fn client(&self) -> Client {
        self.c.clone()
    }

    async fn state(&self) -> State {
        let mut c = self.client();
        let mut lists = BTreeMap::new();
        for s in SNAPSHOTTERS {
            lists.insert(s, list(&mut c, s, &[]).await.unwrap());
        }
        State { tree: tree(&self.d.root, &["metadata.redb", "metadata.redo"]), lists }
    }

    /// `result` is an error with `code` whose message holds every needle;
    /// the state is still `before`; the daemon still answers.
    async fn refused<T: Debug>(
        &self,
        what: &str,
        before: &State,
        result: Result<T, Status>,
        code: Code,
        needles: &[&str],
    ) {
        let status = match result {
            Ok(v) => panic!("{what}: accepted ({v:?}), expected {code:?}"),
            Err(s) => s,
        };
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        for needle in needles {
            assert!(
                status.message().contains(needle),
                "{what}: message {:?} does not name {needle:?}",
                status.message()
            );
        }
        assert!(
            status.message().len() < 2000,
            "{what}: a message of {} bytes",
            status.message().len()
        );
        self.unchanged(what, before).await;
    }

    async fn unchanged(&self, what: &str, before: &State) {
        let after = self.state().await;
        if &after != before {
            for (k, v) in &after.tree {
                if before.tree.get(k) != Some(v) {
                    eprintln!("{what}: changed or new: {k}: {v}");
                }
            }
            for k in before.tree.keys().filter(|k| !after.tree.contains_key(*k)) {
                eprintln!("{what}: gone: {k}");
            }
            assert_eq!(after.lists, before.lists, "{what}: the metastore changed");
            panic!("{what}: the files under the root changed");
        }
        let info = self
            .client()
            .stat(stat(S, "mid"))
            .await
            .unwrap_or_else(|e| panic!("{what}: daemon stopped serving: {e}"));
        assert_eq!(info.into_inner().info.unwrap().kind, api::Kind::Committed as i32);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_requests_change_nothing() {
    let f = Fixture::start().await;
    let before = f.state().await;
    let mut c = f.client();

    // Empty keys, in every request that takes one.
    let empty = "must not be empty";
    f.refused(
        "prepare ''",
        &before,
        c.prepare(prepare(S, "", "")).await,
        Code::InvalidArgument,
        &["snapshot key", empty],
    )
    .await;
    f.refused(
        "view ''",
        &before,
        c.view(view(S, "", "mid")).await,
        Code::InvalidArgument,
        &[empty],
    )
    .await;
    f.refused(
        "commit as ''",
        &before,
        c.commit(commit(S, "", "act")).await,
        Code::InvalidArgument,
        &["committed name", empty],
    )
    .await;
    f.refused(
        "commit key ''",
        &before,
        c.commit(commit(S, "n", "")).await,
        Code::InvalidArgument,
        &["snapshot key", empty],
    )
    .await;
    f.refused("remove ''", &before, c.remove(remove(S, "")).await, Code::InvalidArgument, &[empty])
        .await;
    f.refused("stat ''", &before, c.stat(stat(S, "")).await, Code::InvalidArgument, &[empty]).await;
    f.refused("mounts ''", &before, c.mounts(mounts(S, "")).await, Code::InvalidArgument, &[empty])
        .await;
    f.refused("usage ''", &before, c.usage(usage(S, "")).await, Code::InvalidArgument, &[empty])
        .await;
    let r = c.update(update(S, "", labels(&[("a", "b")]), &[])).await;
    f.refused("update ''", &before, r, Code::InvalidArgument, &["snapshot name", empty]).await;

    // Keys of 1 MiB: over the 32 KiB limit, quoted briefly.
    let huge = "k".repeat(1 << 20);
    let over = "1048576 bytes, more than the 32768 allowed";
    f.refused(
        "prepare 1 MiB key",
        &before,
        c.prepare(prepare(S, &huge, "")).await,
        Code::InvalidArgument,
        &[over],
    )
    .await;
    f.refused(
        "view 1 MiB key",
        &before,
        c.view(view(S, &huge, "mid")).await,
        Code::InvalidArgument,
        &[over],
    )
    .await;
    f.refused(
        "commit as 1 MiB name",
        &before,
        c.commit(commit(S, &huge, "act")).await,
        Code::InvalidArgument,
        &["committed name", over],
    )
    .await;
    f.refused(
        "stat 1 MiB key",
        &before,
        c.stat(stat(S, &huge)).await,
        Code::InvalidArgument,
        &[over],
    )
    .await;
    f.refused(
        "remove 1 MiB key",
        &before,
        c.remove(remove(S, &huge)).await,
        Code::InvalidArgument,
        &[over],
    )
    .await;
    f.refused(
        "mounts 1 MiB key",
        &before,
        c.mounts(mounts(S, &huge)).await,
        Code::InvalidArgument,
        &[over],
    )
    .await;
    let r = c.update(update(S, &huge, labels(&[("a", "b")]), &[])).await;
    f.refused("update 1 MiB key", &before, r, Code::InvalidArgument, &[over]).await;
    // As a parent it names no snapshot: NotFound.
    let r = c.prepare(prepare(S, "x", &huge)).await;
    f.refused(
        "parent of 1 MiB",
        &before,
        r,
        Code::NotFound,
        &["parent snapshot \"kkk", "1048576 bytes", "does not exist"],
    )
    .await;
    // Over the 16 MiB message limit: refused before decoding.
    let giant = "k".repeat(17 << 20);
    let r = c.prepare(prepare(S, &giant, "")).await;
    f.refused("17 MiB request", &before, r, Code::OutOfRange, &["message length too large"]).await;

    // Parents.
    let r = c.prepare(prepare(S, "x", "nope")).await;
    f.refused(
        "unknown parent",
        &before,
        r,
        Code::NotFound,
        &["parent snapshot \"nope\" of \"x\" does not exist"],
    )
    .await;
    let r = c.view(view(S, "x", "nope")).await;
    f.refused("view of unknown parent", &before, r, Code::NotFound, &["\"nope\""]).await;
    let r = c.prepare(prepare(S, "x", "act")).await;
    f.refused(
        "active parent",
        &before,
        r,
        Code::FailedPrecondition,
        &["parent snapshot \"act\" of \"x\" is active, not committed"],
    )
    .await;
    let r = c.prepare(prepare(S, "x", "vw")).await;
    f.refused(
        "view parent",
        &before,
        r,
        Code::FailedPrecondition,
        &["\"vw\"", "a view, not committed"],
    )
    .await;
    let r = c.view(view(S, "x", "act")).await;
    f.refused(
        "view of an active",
        &before,
        r,
        Code::FailedPrecondition,
        &["\"act\"", "not committed"],
    )
    .await;

    // Duplicate keys, whatever the kind of the holder.
    for (what, key) in [("active", "act"), ("view", "vw"), ("committed", "mid")] {
        let r = c.prepare(prepare(S, key, "")).await;
        f.refused(
            &format!("prepare over {what}"),
            &before,
            r,
            Code::AlreadyExists,
            &[&format!("snapshot \"{key}\" already exists")],
        )
        .await;
        let r = c.view(view(S, key, "base")).await;
        f.refused(
            &format!("view over {what}"),
            &before,
            r,
            Code::AlreadyExists,
            &[&format!("\"{key}\"")],
        )
        .await;
    }

    // Commit.
    let r = c.commit(commit(S, "n", "vw")).await;
    f.refused(
        "commit of a view",
        &before,
        r,
        Code::FailedPrecondition,
        &["\"vw\" is a view, not active"],
    )
    .await;
    let r = c.commit(commit(S, "n", "mid")).await;
    f.refused(
        "commit of a committed",
        &before,
        r,
        Code::FailedPrecondition,
        &["\"mid\" is committed, not active"],
    )
    .await;
    let r = c.commit(commit(S, "n", "nope")).await;
    f.refused("commit of a missing key", &before, r, Code::NotFound, &["\"nope\" does not exist"])
        .await;
    for taken in ["base", "vw", "act"] {
        let r = c.commit(commit(S, taken, "act")).await;
        f.refused(
            &format!("commit onto {taken}"),
            &before,
            r,
            Code::AlreadyExists,
            &[&format!("snapshot \"{taken}\" already exists")],
        )
        .await;
    }
    let mut req = commit(S, "n", "act");
    req.parent = "base".into();
    f.refused(
        "commit with another parent",
        &before,
        c.commit(req).await,
        Code::InvalidArgument,
        &["its parent is \"mid\""],
    )
    .await;

    // Remove of a parent.
    let r = c.remove(remove(S, "mid")).await;
    f.refused(
        "remove of a parent",
        &before,
        r,
        Code::FailedPrecondition,
        &["cannot remove snapshot with child", "\"mid\""],
    )
    .await;
    let r = c.remove(remove(S, "base")).await;
    f.refused(
        "remove of a grandparent",
        &before,
        r,
        Code::FailedPrecondition,
        &["remove", "\"base\" is the parent of \"mid\""],
    )
    .await;
    f.refused(
        "remove of a missing key",
        &before,
        c.remove(remove(S, "nope")).await,
        Code::NotFound,
        &["\"nope\""],
    )
    .await;

    // Update: only labels.
    for path in [
        "name",
        "kind",
        "parent",
        "created_at",
        "updated_at",
        "size",
        "",
        "Labels",
        "labels_x",
        "label.a",
    ] {
        let r = c.update(update(S, "act", labels(&[("a", "b")]), &[path])).await;
        f.refused(
            &format!("update of {path:?}"),
            &before,
            r,
            Code::InvalidArgument,
            &[&format!("cannot update {path:?} field on snapshot \"act\"")],
        )
        .await;
    }
    // A good path beside a bad one changes nothing either.
    let r = c.update(update(S, "act", labels(&[("a", "b")]), &["labels.a", "kind"])).await;
    f.refused("update of labels.a and kind", &before, r, Code::InvalidArgument, &["\"kind\""])
        .await;
    let r = c.update(update(S, "nope", labels(&[("a", "b")]), &[])).await;
    f.refused("update of a missing key", &before, r, Code::NotFound, &["\"nope\""]).await;
    let req = api::UpdateSnapshotRequest { snapshotter: S.into(), info: None, update_mask: None };
    f.refused(
        "update without info",
        &before,
        c.update(req).await,
        Code::InvalidArgument,
        &["no info"],
    )
    .await;
    let mut req = update(S, "act", labels(&[("a", "b")]), &["labels.a"]);
    req.info.as_mut().unwrap().kind = 99;
    f.refused(
        "update with kind 99",
        &before,
        c.update(req).await,
        Code::InvalidArgument,
        &["\"act\"", "unknown kind 99"],
    )
    .await;

    // Labels over 4096 bytes (key and value together), and over 4 MiB in all.
    let big = labels(&[("big", &"v".repeat(4094))]);
    let label_over = "label \"big\" of snapshot";
    let mut req = prepare(S, "x", "");
    req.labels = big.clone();
    f.refused(
        "prepare with a big label",
        &before,
        c.prepare(req).await,
        Code::InvalidArgument,
        &[label_over, "4097 bytes"],
    )
    .await;
    let mut req = view(S, "x", "mid");
    req.labels = big.clone();
    f.refused(
        "view with a big label",
        &before,
        c.view(req).await,
        Code::InvalidArgument,
        &[label_over],
    )
    .await;
    let mut req = commit(S, "n", "act");
    req.labels = big.clone();
    f.refused(
        "commit with a big label",
        &before,
        c.commit(req).await,
        Code::InvalidArgument,
        &["label \"big\" of snapshot \"n\""],
    )
    .await;
    let r = c.update(update(S, "act", big.clone(), &["labels.big"])).await;
    f.refused(
        "update to a big label",
        &before,
        r,
        Code::InvalidArgument,
        &["label \"big\" of snapshot \"act\""],
    )
    .await;
    let r = c.update(update(S, "act", big.clone(), &[])).await;
    f.refused("update all to a big label", &before, r, Code::InvalidArgument, &[label_over]).await;
    let heavy: Labels = (0..1100).map(|i| (format!("l{i:04}"), "v".repeat(4000))).collect();
    let mut req = prepare(S, "x", "");
    req.labels = heavy.clone();
    f.refused(
        "4.4 MB of labels",
        &before,
        c.prepare(req).await,
        Code::InvalidArgument,
        &["labels of snapshot \"x\" total", "more than the 4194304 allowed"],
    )
    .await;
    let r = c.update(update(S, "act", heavy, &["labels"])).await;
    f.refused(
        "update to 4.4 MB of labels",
        &before,
        r,
        Code::InvalidArgument,
        &["labels of snapshot \"act\" total"],
    )
    .await;

    // Malformed filters: InvalidArgument naming the filter and the offset.
    for (filter, offset) in [
        ("name==", 6),
        ("labels.\"unterminated", 7),
        ("name~=(", 6),
        ("name=x", 4),
        ("==a", 0),
        ("name,,kind", 5),
        ("name==a b", 7),
        ("kind==active,", 13),
        ("name\0", 4),
    ] {
        let r = list(&mut c, S, &["kind==committed", filter]).await;
        let at = format!("at offset {offset}");
        f.refused(
            &format!("filter {filter:?}"),
            &before,
            r,
            Code::InvalidArgument,
            &["invalid filter", &format!("{filter:?}"), &at],
        )
        .await;
    }
    // Nested deep enough to overflow a debug build's stack (an abort of the
    // whole daemon) before the nesting limit.
    let deep = format!("name~=a{}", "+".repeat(200));
    let r = list(&mut c, S, &[&deep]).await;
    f.refused(
        "a deeply nested regex",
        &before,
        r,
        Code::InvalidArgument,
        &["invalid regular expression", "nested"],
    )
    .await;

    // Unknown snapshotters, in every request.
    let served = "(served: bind, native, overlay)";
    for name in ["nope", "", "Overlay", "overlay/../native"] {
        let what = |op: &str| format!("{op} on snapshotter {name:?}");
        let needles = [format!("snapshotter {name:?} not found"), served.to_string()];
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        let mut req = prepare(S, "x", "");
        req.snapshotter = name.into();
        f.refused(&what("prepare"), &before, c.prepare(req).await, Code::NotFound, &needles).await;
        let mut req = view(S, "x", "mid");
        req.snapshotter = name.into();
        f.refused(&what("view"), &before, c.view(req).await, Code::NotFound, &needles).await;
        let r = c.mounts(api::MountsRequest { snapshotter: name.into(), key: "act".into() }).await;
        f.refused(&what("mounts"), &before, r, Code::NotFound, &needles).await;
        let mut req = commit(S, "n", "act");
        req.snapshotter = name.into();
        f.refused(&what("commit"), &before, c.commit(req).await, Code::NotFound, &needles).await;
        let r = c
            .remove(api::RemoveSnapshotRequest { snapshotter: name.into(), key: "act".into() })
            .await;
        f.refused(&what("remove"), &before, r, Code::NotFound, &needles).await;
        let r =
            c.stat(api::StatSnapshotRequest { snapshotter: name.into(), key: "act".into() }).await;
        f.refused(&what("stat"), &before, r, Code::NotFound, &needles).await;
        let mut req = update(S, "act", labels(&[("a", "b")]), &[]);
        req.snapshotter = name.into();
        f.refused(&what("update"), &before, c.update(req).await, Code::NotFound, &needles).await;
        let r = list(&mut c, name, &[]).await;
        f.refused(&what("list"), &before, r, Code::NotFound, &needles).await;
        let r = c.usage(api::UsageRequest { snapshotter: name.into(), key: "act".into() }).await;
        f.refused(&what("usage"), &before, r, Code::NotFound, &needles).await;
        let r = c.cleanup(api::CleanupRequest { snapshotter: name.into() }).await;
        f.refused(&what("cleanup"), &before, r, Code::NotFound, &needles).await;
    }

    // Mounts of a committed snapshot.
    let r = c.mounts(mounts(S, "mid")).await;
    f.refused(
        "mounts of a committed",
        &before,
        r,
        Code::FailedPrecondition,
        &["\"mid\" is committed"],
    )
    .await;

    let mut d = f.d;
    assert!(d.stop().success(), "{}", d.logs());
}

/// Odd keys are opaque data: stored, listed, statted and removed as given,
/// never a path (every directory is named by its id).
#[tokio::test(flavor = "multi_thread")]
async fn odd_keys_and_many_labels_are_data() {
    let f = Fixture::start().await;
    let before = f.state().await;
    let mut c = f.client();
    let snapshots = f.d.snapshots_dir(S);
    let keys = [
        "nul\0inside",
        "\0",
        "a/b",
        "/",
        "..",
        "../../escape",
        "a/../../b",
        "./.",
        "é ü\n\t",
        &"k".repeat(32 << 10),
    ];
    for key in keys {
        let m = c
            .prepare(prepare(S, key, "mid"))
            .await
            .unwrap_or_else(|e| panic!("prepare {key:?}: {e}"))
            .into_inner()
            .mounts;
        for id in ids_in(&m) {
            assert!(snapshots.join(id.to_string()).is_dir(), "{key:?}: {m:?}");
        }
        let info = c.stat(stat(S, key)).await.unwrap().into_inner().info.unwrap();
        assert_eq!((info.name.as_str(), info.parent.as_str()), (key, "mid"));
        let name = format!("{key}-committed");
        c.commit(commit(S, &name.replace("k".repeat(32 << 10).as_str(), "long"), key))
            .await
            .unwrap();
    }
    for entry in entries(&snapshots) {
        assert!(entry.parse::<u64>().is_ok(), "an entry not named by an id: {entry:?}");
    }
    let listed: Vec<String> =
        list(&mut c, S, &[]).await.unwrap().into_iter().map(|i| i.name).collect();
    for key in keys {
        let name = format!("{key}-committed").replace("k".repeat(32 << 10).as_str(), "long");
        assert!(listed.contains(&name), "{name:?} not listed");
        let found = list(&mut c, S, &[&format!("name=={:?}", name)]).await;
        if !name.contains('\0') {
            // Go quoting has no \0 escape; other names are found by filter.
            assert_eq!(found.unwrap().len(), 1, "filter name=={name:?}");
        }
        c.remove(remove(S, &name)).await.unwrap();
    }

    // Thousands of labels: containerd sets no count limit, neither do we.
    let many: Labels =
        (0..5000).map(|i| (format!("containerd.io/snapshot/l{i}"), format!("value {i}"))).collect();
    let mut req = prepare(S, "many", "mid");
    req.labels = many.clone();
    c.prepare(req).await.unwrap();
    assert_eq!(c.stat(stat(S, "many")).await.unwrap().into_inner().info.unwrap().labels, many);
    let listed = list(&mut c, S, &["labels.\"containerd.io/snapshot/l4999\"==\"value 4999\""])
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    // A label of exactly 4096 bytes is fine.
    let edge = labels(&[("edge", &"v".repeat(4092))]);
    c.update(update(S, "many", edge, &["labels.edge"])).await.unwrap();
    c.remove(remove(S, "many")).await.unwrap();

    // Many records of the largest size List still streams (in batches that
    // fit a message).
    let fat: Labels = (0..200).map(|i| (format!("l{i:03}"), "v".repeat(4000))).collect();
    for i in 0..30 {
        let mut req = prepare(S, &format!("fat-{i}-{}", "k".repeat(32_000)), "");
        req.labels = fat.clone();
        c.prepare(req).await.unwrap();
    }
    let fat_listed = list(&mut c, S, &["name~=^fat-"]).await.unwrap();
    assert_eq!(fat_listed.len(), 30);
    for info in fat_listed {
        c.remove(remove(S, &info.name)).await.unwrap();
    }
    c.cleanup(cleanup(S)).await.unwrap();
    f.unchanged("after removing the odd keys", &before).await;
}

/// A raw gRPC message, to send what a typed client cannot.
mod raw {
    use prost::bytes::{Buf, BufMut};
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Clone, Copy, Default)]
    pub struct Bytes;

    impl Codec for Bytes {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Bytes;
        type Decoder = Bytes;
        fn encoder(&mut self) -> Bytes {
            Bytes
        }
        fn decoder(&mut self) -> Bytes {
            Bytes
        }
    }

    impl Encoder for Bytes {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for Bytes {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let mut out = vec![0; src.remaining()];
            src.copy_to_slice(&mut out);
            Ok(Some(out))
        }
    }

    /// A protobuf string field.
    pub fn field(number: u8, value: &[u8]) -> Vec<u8> {
        assert!(value.len() < 128);
        let mut out = vec![(number << 3) | 2, value.len() as u8];
        out.extend_from_slice(value);
        out
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_messages_are_refused() {
    let f = Fixture::start().await;
    let before = f.state().await;
    let channel = channel(&f.d.socket).await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a key that is not UTF-8",
            [raw::field(1, b"overlay"), raw::field(2, b"k\xff\xfe")].concat(),
            "not UTF-8",
        ),
        (
            "a snapshotter that is not UTF-8",
            [raw::field(1, b"over\xc0"), raw::field(2, b"k")].concat(),
            "not UTF-8",
        ),
        ("a truncated field", vec![0x12, 0x7f, b'k'], "failed to decode"),
        ("a bad wire type", vec![0x17, 0x00], "failed to decode"),
        ("garbage", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(), "failed to decode"),
    ];
    for (what, body, needle) in cases {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/containerd.services.snapshots.v1.Snapshots/Prepare",
        );
        let r = grpc.unary(tonic::Request::new(body), path, raw::Bytes).await;
        f.refused(what, &before, r, Code::Internal, &[needle]).await;
    }
}

/// A Prepare whose client gives up while the parent is being copied rolls
/// back: no record, no directory, no temp dir. Both ways a client gives up:
/// dropping the call, and a deadline the server enforces (`grpc-timeout`).
#[tokio::test(flavor = "multi_thread")]
async fn cancelled_requests_roll_back() {
    let f = Fixture::start().await;
    let mut c = f.client();
    // A native parent that takes a while to copy: many small files.
    let m = c.prepare(prepare("native", "extract-big", "")).await.unwrap().into_inner().mounts;
    let dir = writable_dir(&m).unwrap();
    for i in 0..1000 {
        std::fs::write(dir.join(format!("f{i:04}")), format!("file {i}").repeat(64)).unwrap();
    }
    c.commit(commit("native", "big", "extract-big")).await.unwrap();
    let before = f.state().await;
    let native = f.d.snapshots_dir("native");

    // Dropped by the client while the parent is being copied (its temp dir
    // is there), one after another.
    for i in 0..4 {
        let mut c = f.client();
        let call = tokio::spawn(async move {
            c.prepare(prepare("native", &format!("dropped-{i}"), "big")).await
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !entries(&native).iter().any(|e| e.starts_with("new-")) {
            assert!(!call.is_finished(), "the copy finished before it was seen");
            assert!(std::time::Instant::now() < deadline, "the copy never started");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        call.abort();
        assert!(call.await.unwrap_err().is_cancelled());
        settle(&native).await;
        f.unchanged("a prepare dropped by the client", &before).await;
    }

    // A deadline the server enforces.
    let mut req = tonic::Request::new(prepare("native", "deadline", "big"));
    req.set_timeout(Duration::from_millis(5));
    let status = c.prepare(req).await.unwrap_err();
    assert!(matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded), "{status:?}");
    settle(&native).await;
    f.unchanged("a prepare past its deadline", &before).await;

    // The same Prepare with time to finish works (so the above were
    // cancelled, not refused).
    c.prepare(prepare("native", "finished", "big")).await.unwrap();
    let m = c.mounts(mounts("native", "finished")).await.unwrap().into_inner().mounts;
    assert_eq!(entries(&writable_dir(&m).unwrap()).len(), 1000);
    // The four dropped mid-copy were rolled back (the one past its deadline
    // may have been cancelled before it started).
    let rolled_back =
        f.d.logs()
            .matches("the client cancelled the request before it committed: rolled back")
            .count();
    assert!(rolled_back >= 4, "not every cancelled Prepare was rolled back:\n{}", f.d.logs());
}

/// Waits until the cancelled operations, still running on the daemon's
/// blocking threads, have finished: no temp dir left for a while.
async fn settle(snapshots: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut quiet = 0;
    while quiet < 10 {
        let busy = entries(snapshots).iter().any(|e| e.starts_with("new-") || e.starts_with("rm-"));
        quiet = if busy { 0 } else { quiet + 1 };
        assert!(
            std::time::Instant::now() < deadline,
            "temp dirs still there after 60 s: {:?}",
            entries(snapshots)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A copy whose client went away stops between files (issue 13 item 9):
/// the dropped Prepare's temp dir is gone long before a whole copy of the
/// parent could have finished. Before, the copy ran to its end and was
/// only then rolled back.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_copy_stops_between_files() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let m = c.prepare(prepare("native", "extract-big", "")).await.unwrap().into_inner().mounts;
    let dir = writable_dir(&m).unwrap();
    for d in 0..20 {
        let sub = dir.join(format!("d{d:02}"));
        std::fs::create_dir(&sub).unwrap();
        for i in 0..400 {
            std::fs::write(sub.join(format!("f{i:04}")), format!("file {i}").repeat(64)).unwrap();
        }
    }
    c.commit(commit("native", "big", "extract-big")).await.unwrap();
    let native = d.snapshots_dir("native");

    let started = std::time::Instant::now();
    c.prepare(prepare("native", "whole", "big")).await.unwrap();
    let whole = started.elapsed();

    let mut dropped = d.client().await;
    let call =
        tokio::spawn(async move { dropped.prepare(prepare("native", "dropped", "big")).await });
    while !entries(&native).iter().any(|e| e.starts_with("new-")) {
        assert!(!call.is_finished(), "the copy finished before it was seen");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let aborted = std::time::Instant::now();
    call.abort();
    while entries(&native).iter().any(|e| e.starts_with("new-") || e.starts_with("rm-")) {
        assert!(aborted.elapsed() < Duration::from_secs(60), "the copy never stopped");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stopped = aborted.elapsed();
    println!("a whole copy of 8000 files: {whole:?}; a dropped one stopped after {stopped:?}");
    assert!(stopped * 4 < whole, "the dropped copy ran on: {stopped:?} of {whole:?}");
    // Logged once the error comes back up, just after the temp dir went.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !d.logs().contains("rolled back (the copy stopped)") {
        assert!(std::time::Instant::now() < deadline, "{}", d.logs());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `<root>/<name>` is 0700 and its metastore's files (database, redo log)
/// 0600, also when an older daemon left them 0755 and 0644 (issue 13 item 11).
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshotters_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let mut d = Daemon::start();
    let dir = d.root.join("overlay");
    let (db, log) = (dir.join("metadata.redb"), dir.join("metadata.redo"));
    assert_eq!((mode(&dir), mode(&db), mode(&log)), (0o700, 0o600, 0o600));
    d.stop();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.spawn(&[]);
    assert_eq!((mode(&dir), mode(&db), mode(&log)), (0o700, 0o600, 0o600));
}

/// A root with `,` `:` or `=` would break or inject overlay options: the
/// daemon refuses it, naming the key and the character (issue 13 item 13).
#[test]
fn a_root_that_would_inject_overlay_options_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a,upperdir=x");
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--root"])
        .arg(&root)
        .arg("--address")
        .arg(dir.path().join("wasmsnap.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--root: ") && stderr.contains("contains ','"), "{stderr}");
    assert!(!root.exists(), "it created the root");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "root = \"/var/lib/wasm:snap\"\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("root: \"/var/lib/wasm:snap\" contains ':'"), "{stderr}");
}
