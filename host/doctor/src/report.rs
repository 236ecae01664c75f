//! Check results, printed one per line or as JSON.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One check's outcome: `name` is dotted (`kernel.overlay`,
/// `containerd.proxy_plugins.overlay`), `fix` says what to do when it is
/// not ok.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn ok(&mut self, name: impl Into<String>, message: impl Into<String>) {
        self.push(name, Status::Ok, message, None::<String>);
    }

    pub fn warn(
        &mut self,
        name: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(name, Status::Warn, message, Some(fix));
    }

    pub fn fail(
        &mut self,
        name: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(name, Status::Fail, message, Some(fix));
    }

    fn push(
        &mut self,
        name: impl Into<String>,
        status: Status,
        message: impl Into<String>,
        fix: Option<impl Into<String>>,
    ) {
        self.checks.push(Check {
            name: name.into(),
            status,
            message: message.into(),
            fix: fix.map(Into::into),
        });
    }

    /// The worst status found (ok for an empty report).
    pub fn worst(&self) -> Status {
        self.checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok)
    }

    /// The checks named `name`, or under it (`name.`...).
    pub fn find(&self, name: &str) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| {
                c.name == name || c.name.strip_prefix(name).is_some_and(|r| r.starts_with('.'))
            })
            .collect()
    }

    /// One line per check: `ok   kernel.overlay: ...  -> fix`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let status = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "fail",
            };
            out.push_str(&format!("{status} {}: {}", c.name, c.message));
            if let Some(fix) = &c.fix {
                out.push_str(&format!(" -> {fix}"));
            }
            out.push('\n');
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        out.push_str(&format!(
            "{} ok, {} warn, {} fail\n",
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Fail)
        ));
        out
    }

    pub fn to_json(&self) -> String {
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        let doc = serde_json::json!({
            "checks": self.checks,
            "summary": { "ok": count(Status::Ok), "warn": count(Status::Warn), "fail": count(Status::Fail) },
        });
        serde_json::to_string_pretty(&doc).expect("a report serialises")
    }
}
