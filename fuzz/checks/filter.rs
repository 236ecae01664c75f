//! containerd's filter language (`wasmsnap_metastore::parse_filters`): on
//! any input, parsing returns (never panics, never loops), an error points
//! inside the filter it names, and a filter that parses can be matched
//! against records without panicking, the same way twice.

use std::collections::BTreeMap;

use wasmsnap_metastore::{Kind, Record, Timestamp, parse_filters};

/// The input is up to four filters separated by newlines (lossy UTF-8: the
/// daemon only ever sees valid UTF-8, which gRPC strings are).
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let filters: Vec<String> = text.split('\n').take(4).map(str::to_owned).collect();
    match parse_filters(&filters) {
        Ok(filter) => {
            for record in records() {
                let first = filter.matches(&record);
                assert_eq!(first, filter.matches(&record), "matching is not deterministic");
            }
        }
        Err(e) => {
            assert!(e.index < filters.len(), "error names filter {} of {}", e.index, filters.len());
            assert!(
                e.offset <= filters[e.index].len(),
                "offset {} past filter {:?}",
                e.offset,
                filters[e.index]
            );
            assert!(
                e.filter.len() <= filters[e.index].len().max(600),
                "error quotes more than the filter"
            );
            let _ = e.to_string();
        }
    }
}

fn records() -> Vec<Record> {
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let record = |name: &str, kind, parent: Option<&str>, l| Record {
        id: 1,
        name: name.into(),
        kind,
        parent: parent.map(String::from),
        labels: l,
        created: Timestamp::default(),
        updated: Timestamp::default(),
        usage: None,
        content: Some("fs".into()),
    };
    vec![
        record(
            "sha256:abc",
            Kind::Committed,
            None,
            labels(&[("containerd.io/snapshot.ref", "sha256:abc")]),
        ),
        record(
            "k8s.io/1/extract",
            Kind::Active,
            Some("sha256:abc"),
            labels(&[("a.b", "x,y"), ("é", "\"q\"")]),
        ),
        record("view \0 odd", Kind::View, Some(""), BTreeMap::new()),
    ]
}
