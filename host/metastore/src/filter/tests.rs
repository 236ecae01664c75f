use std::collections::BTreeMap;

use super::*;
use crate::record::Timestamp;

fn rec(name: &str, kind: Kind, parent: Option<&str>, labels: &[(&str, &str)]) -> Record {
    Record {
        id: 1,
        name: name.into(),
        kind,
        parent: parent.map(Into::into),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        created: Timestamp::default(),
        updated: Timestamp::default(),
        usage: None,
        content: None,
    }
}

fn corpus() -> Vec<Record> {
    use Kind::*;
    vec![
        rec("a", Committed, None, &[("foo", "true")]),
        rec("b", Committed, Some("a"), &[]),
        rec("c", Active, Some("b"), &[("foo", "present"), ("more complex label", "present")]),
        rec("d", View, Some("a"), &[("bar", "true")]),
        rec("e", Active, None, &[("more complex label with \\ and \"", "present")]),
        rec("f", Active, Some("a"), &[("more complex label with \\ and \".post", "present")]),
        rec(
            "k8s.io/3/extract-1 sha256:x",
            Active,
            Some("sha256:p"),
            &[("containerd.io/snapshot.ref", "sha256:abc")],
        ),
        rec(
            "sha256:p",
            Committed,
            None,
            &[("foo", "omg_asdf.asdf-qwer"), ("containerd.io/gc.root", "2024")],
        ),
    ]
}

/// Indexes of the corpus records that `filters` matches.
fn matching(filters: &[&str]) -> Vec<usize> {
    let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
    let filter =
        parse_filters(&filters).unwrap_or_else(|e| panic!("{filters:?} should parse: {e}"));
    corpus().iter().enumerate().filter(|(_, r)| filter.matches(r)).map(|(i, _)| i).collect()
}

const ALL: &[usize] = &[0, 1, 2, 3, 4, 5, 6, 7];

#[test]
fn selects_like_containerd() {
    let cases: &[(&[&str], &[usize])] = &[
        (&[], ALL),
        (&[""], ALL),
        (&["name"], ALL),
        (&["parent"], ALL),
        (&["kind"], ALL),
        (&["labels.foo"], &[0, 2, 7]),
        (&["labels.foo,name"], &[0, 2, 7]),
        (&["labels.foo==true"], &[0]),
        (&["labels.foo==omg_asdf.asdf-qwer"], &[7]),
        (&["labels.foo!=true"], &[1, 2, 3, 4, 5, 6, 7]),
        (&["labels.foo~=^$"], &[1, 3, 4, 5, 6]),
        (&["name==b"], &[1]),
        (&["name!=b"], &[0, 2, 3, 4, 5, 6, 7]),
        (&["name==\"a\""], &[0]),
        (&["\"name\"==a"], &[0]),
        (&["name.extra==a"], &[0]),
        (&[" name == a"], &[0]),
        (&["name==a=b"], &[]),
        (&["name==a,name==b"], &[]),
        (&["name==a", "name==b"], &[0, 1]),
        (&["name==a", ""], ALL),
        (&["kind==committed"], &[0, 1, 7]),
        (&["kind==active"], &[2, 4, 5, 6]),
        (&["kind==view"], &[3]),
        (&["kind!=active,kind!=view"], &[0, 1, 7]),
        (&["parent==\"\""], &[0, 4, 7]),
        (&["parent!=\"\""], &[1, 2, 3, 5, 6]),
        (&["parent==a"], &[1, 3, 5]),
        (&["labels.\"more complex label\""], &[2]),
        (&[r#"labels."more complex label with \\ and \""==present"#], &[4]),
        (&[r#"labels."more complex label with \\ and \"".post==present"#], &[5]),
        (&["labels.\"containerd.io/gc.root\""], &[7]),
        (&["labels.\"containerd.io/gc.root\"==2024"], &[7]),
        // What containerd sends when a Prepare with a snapshot.ref label
        // meets AlreadyExists: the ref value unquoted, with a colon.
        (&[r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent=="sha256:p""#], &[6]),
        (&[r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent=="sha256:q""#], &[]),
        (&["name~=^[a-c]$"], &[0, 1, 2]),
        (&["name~=/^[a-c]$/"], &[0, 1, 2]),
        (&["name~=|^[ab]$|"], &[0, 1]),
        (&["name~=\"^[ab]$\""], &[0, 1]),
        (&["name~=sha256"], &[6, 7]),
        (&["name~=[abc]+,name!=a"], &[1, 2, 6, 7]),
        (&["unknown"], &[]),
        (&["unknown!=x"], ALL),
        (&["labels"], &[]),
        (&["labels.\"\\x66oo\"==true"], &[0]),
        (&["labels.foo==\"\\xff\""], &[]),
        (&["labels.foo!=\"\\xff\""], ALL),
    ];
    for (filters, want) in cases {
        assert_eq!(matching(filters), *want, "filters {filters:?}");
    }
}

#[test]
fn refuses_malformed_filters_naming_the_offset() {
    let cases: &[(&str, usize, &str)] = &[
        // containerd's own error cases (filters/filter_test.go), same offsets.
        ("labels.|foo|==omg_asdf.asdf-qwer", 7, "invalid quote"),
        (r#"labels.?"more complex label with \\ and \"".post==present"#, 7, "expected a field"),
        ("name==foo,", 10, "expected a field"),
        ("labels.", 7, "expected a field"),
        ("image~=,id?=?fbaq", 7, "expected a value"),
        ("labels.ns/key==value", 9, "quoted literal not terminated"),
        ("labels.key==/value", 12, "quoted literal not terminated"),
        // More.
        ("name==", 6, "expected a value"),
        ("name=a", 4, "unsupported operator \"=\""),
        ("name===a", 4, "unsupported operator \"===\""),
        ("name!~a", 4, "unsupported operator"),
        ("name a", 5, "expected an operator"),
        ("name ,a", 5, "expected an operator"),
        (",name", 0, "expected a field"),
        ("name,,x", 5, "expected a field"),
        ("name==a ", 7, "unexpected input ' '"),
        ("name==\"a\"b", 9, "unexpected input 'b'"),
        ("name==/a/", 6, "invalid quote"),
        ("name==|a|", 6, "invalid quote"),
        ("name~=/a", 6, "quoted literal not terminated"),
        (r"name~=/\d/", 6, "illegal escape sequence"),
        (r#"name=="\x4""#, 6, "illegal numeric escape sequence"),
        (r#"name=="\400""#, 6, "bad quoted string"),
        ("name~=(", 6, "invalid regular expression"),
        ("name~=\"\\xff\"", 6, "not valid UTF-8"),
        ("name\0", 4, "unexpected null"),
        ("name==a\0", 7, "unexpected input"),
        ("\u{FFFD}", 0, "rune error"),
        ("labels.\"a\nb\"", 7, "quoted literal not terminated"),
        ("labels.\"\\q\"", 7, "illegal escape sequence"),
        ("?", 0, "expected a field"),
        (".", 0, "expected a field"),
        ("==a", 0, "expected a field"),
        ("name==.a", 6, "expected a value"),
        ("name==,", 6, "expected a value"),
    ];
    for (input, offset, message) in cases {
        let err = parse_filters(&[input.to_string()]).expect_err(input);
        assert_eq!(err.offset, *offset, "{input:?}: {err}");
        assert!(err.message.contains(message), "{input:?}: {err}");
        assert!(err.to_string().contains(&format!("at offset {offset}")), "{err}");
    }
}

#[test]
fn a_bad_filter_is_an_error_even_beside_one_that_matches_all() {
    let err = parse_filters(&["".into(), "name==a".into(), "name==".into()]).unwrap_err();
    assert_eq!(err.index, 2);
    let err: crate::Error = err.into();
    assert!(matches!(err, crate::Error::InvalidArgument(_)));
}

#[test]
fn long_filters_are_cut_in_errors() {
    let long = format!("name=={}", "é".repeat(100_000)) + " x";
    let err = parse_filters(&[long]).unwrap_err();
    assert!(err.filter.len() < 600);
    assert_eq!(err.offset, 6 + 200_000);
}

/// No input may panic the parser (it is also fuzzed).
#[test]
fn never_panics_on_arbitrary_input() {
    const PIECES: &[&str] = &[
        "name", "labels", "parent", "kind", ".", ",", "=", "==", "!=", "~=", "!", "~", "\"", "/",
        "|", "\\", "\\x", "\\u", "\\U", "\\0", "7", "f", "a", " ", "\n", "\0", "é", "\u{FFFD}",
        "\u{200b}", "(", "[", "*", "{9999}", ":", "x", "'", "`",
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let record = corpus().remove(2);
    for _ in 0..50_000 {
        let len = rand() % 12;
        let input: String =
            (0..len).map(|_| PIECES[(rand() % PIECES.len() as u64) as usize]).collect();
        match parse_filters(std::slice::from_ref(&input)) {
            Ok(filter) => {
                filter.matches(&record);
            }
            Err(e) => assert!(e.offset <= input.len(), "{input:?}: {e}"),
        }
    }
}

/// Found by the filter_parser fuzzer: a deeply nested expression overflowed
/// the stack of a debug build (an abort, not an error). It is an error now,
/// however deep.
#[test]
fn deeply_nested_expressions_are_an_error_not_a_crash() {
    for depth in [65, 200, 100_000] {
        for pattern in
            ["a".to_string() + &"+".repeat(depth), "(".repeat(depth) + &")".repeat(depth)]
        {
            let err = parse_filters(&[format!("name~={pattern}")]).unwrap_err();
            assert!(
                err.message.contains("invalid regular expression")
                    && err.message.contains("nested"),
                "{err}"
            );
        }
    }
    parse_filters(&[format!("name~={}", "(a".repeat(20) + &")".repeat(20))]).unwrap();
}
