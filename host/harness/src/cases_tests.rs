use super::*;

fn parse_str(text: &str) -> Result<Vec<Case>, CaseFileError> {
    parse(Path::new("t.toml"), text)
}

#[test]
fn a_full_case_resolves() {
    let cases = parse_str(
        r#"
[defaults]
config = { mount_options = "nosuid" }
facts = { userxattr = true }

[[case]]
name = "active on three"
kind = "active"
parents = 3
labels = { "containerd.io/snapshot/x" = "y" }
config = { extra = 5 }

[case.expect]
layout = { steps = [{ mkdir = "fs", mode = "0755" }, { mkdir = "work", mode = 0o711 }, { chown-like-parent = "fs" }], content = "fs" }
mounts = [{ type = "bind", source = "/r/snapshots/4/fs", options = ["rw", "rbind"] }]
"#,
    )
    .unwrap();
    let c = &cases[0];
    assert_eq!(c.line, 6);
    assert_eq!(c.snapshot.id, 4);
    assert_eq!(c.snapshot.parent_ids, vec![3, 2, 1]);
    assert_eq!(c.snapshot.labels, vec![("containerd.io/snapshot/x".into(), "y".into())]);
    assert_eq!(
        c.config,
        vec![("extra".into(), "5".into()), ("mount_options".into(), "nosuid".into())]
    );
    assert!(c.facts.userxattr && c.facts.overlay);
    let layout = c.expect.layout.as_ref().unwrap();
    assert_eq!(layout.steps[1], Step::Mkdir { name: "work".into(), mode: 0o711 });
    assert_eq!(layout.steps[2], Step::ChownLikeParent { name: "fs".into() });
    assert_eq!(c.expect.mounts.as_ref().unwrap()[0].options, ["rw", "rbind"]);
    assert_eq!(c.root, Path::new(DEFAULT_ROOT));
}

#[test]
fn explicit_parent_ids_and_id() {
    let cases = parse_str("[[case]]\nname = \"x\"\nkind = \"view\"\nparents = [7, 5]\n").unwrap();
    assert_eq!((cases[0].snapshot.id, cases[0].snapshot.parent_ids.clone()), (8, vec![7, 5]));
    assert!(cases[0].expect.is_empty());
}

fn err(text: &str) -> CaseFileError {
    parse_str(text).unwrap_err()
}

#[test]
fn a_syntax_error_names_the_line() {
    let e = err("[[case]]\nname = \"x\"\nkind = \n");
    assert_eq!((e.line, e.file.as_path()), (3, Path::new("t.toml")), "{e}");
}

#[test]
fn an_unknown_key_names_line_and_key() {
    let e = err(
        "[[case]]\nname = \"a\"\nkind = \"view\"\n\n[[case]]\nname = \"b\"\nkind = \"view\"\nparnets = 3\n",
    );
    assert_eq!(e.line, 8, "{e}");
    assert!(e.key.starts_with("case[1]"), "{e}");
    assert!(e.message.contains("parnets"), "{e}");
}

#[test]
fn a_wrong_type_names_the_key() {
    let e = err("[[case]]\nname = \"a\"\nkind = \"view\"\nid = \"nine\"\n");
    assert_eq!((e.line, e.key.as_str()), (4, "case[0].id"), "{e}");
}

#[test]
fn a_bad_step_mode_names_the_nested_key() {
    let e = err(
        "[[case]]\nname = \"a\"\nkind = \"active\"\n[case.expect]\nlayout = { steps = [{ mkdir = \"fs\", mode = \"rwx\" }] }\n",
    );
    assert_eq!((e.line, e.key.as_str()), (5, "case[0].expect.layout.steps[0].mode"), "{e}");
    let shown = e.to_string();
    assert!(shown.starts_with("t.toml:5:"), "{shown}");
}

#[test]
fn semantic_errors_name_line_and_key() {
    let e = err("[[case]]\nname = \"a\"\nkind = \"sideways\"\n");
    assert_eq!((e.line, e.key.as_str()), (3, "case[0].kind"), "{e}");
    let e = err("[[case]]\nname = \"a\"\nkind = \"view\"\nparents = [2, 2]\n");
    assert_eq!((e.line, e.key.as_str()), (4, "case[0].parents"), "{e}");
    let e = err("[[case]]\nname = \"a\"\nkind = \"view\"\nparents = 2\nid = 1\n");
    assert_eq!(e.key, "case[0].id", "{e}");
    let e = err("[[case]]\nname = \"a\"\n");
    assert!(e.message.contains("no `kind`"), "{e}");
    let e =
        err("[[case]]\nname = \"a\"\nkind = \"view\"\n[[case]]\nname = \"a\"\nkind = \"view\"\n");
    assert_eq!((e.line, e.key.as_str()), (5, "case[1].name"), "{e}");
    let e = err(
        "[[case]]\nname = \"a\"\nkind = \"view\"\n[case.expect.error]\nkind = \"oops\"\ncontains = \"\"\n",
    );
    assert_eq!((e.line, e.key.as_str()), (5, "case[0].expect.error.kind"), "{e}");
}

#[test]
fn error_beside_a_plan_is_refused() {
    let e = err(
        "[[case]]\nname = \"a\"\nkind = \"view\"\n[case.expect]\nmounts = []\nerror = { contains = \"x\" }\n",
    );
    assert_eq!((e.line, e.key.as_str()), (6, "case[0].expect.error"), "{e}");
}

#[test]
fn a_missing_required_key_names_the_case() {
    let e = err("[[case]]\nkind = \"view\"\n");
    assert!(e.message.contains("name"), "{e}");
    assert!(e.key.starts_with("case"), "{e}");
}

#[test]
fn an_empty_file_is_refused() {
    assert!(err("# nothing\n").message.contains("no [[case]]"));
}
