//! Saved plans (`reconcile --dry-run --save-plan FILE`, `apply FILE`): the on-disk format, how a
//! plan is fingerprinted and checksummed, and how a saved plan is compared with a fresh one.
//! A saved plan binds a reviewed list of operations to its execution: `apply` re-reads and
//! re-plans, and the engine carries the fresh plan out only when it holds exactly the saved
//! operations (checked with the other guards, before the first write; see [`compare`]).
//!
//! The checksum protects against a damaged or hand-edited file; it is not a signature (whoever
//! can write the file can recompute it), which is why the file is created mode 0600 and why the
//! operations are always checked against a fresh plan. This module decides nothing about what
//! to write to Postman; besides the format it only owns the file's own I/O ([`write_private`],
//! [`read_file`]), so the rules for the file on disk live in one place.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{ManagedGroup, ManagedUser, OktaGroupId, OktaRead, OktaUserId};
use crate::model::{PostmanGroup, PostmanUser};

use super::groups::plan::{GroupOperation, GroupRead};
use super::users::plan::Operation;

/// The version of the file format; a file of another version is refused (make a fresh plan).
pub const FORMAT_VERSION: u32 = 1;

/// The largest plan file `apply` reads: a plan for 100k people is a few tens of MB.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// One operation of a saved plan, as compared: its kind, its subject's Okta id, its label
/// (userName or group displayName) and the exact action payload the engine would send or
/// record. `reason` is for the reviewer and is not compared (its wording is not a change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedOp {
    pub op: String,
    pub subject: String,
    pub label: String,
    pub action: Value,
    pub reason: String,
}

impl SavedOp {
    fn from_user(o: &Operation) -> Self {
        SavedOp {
            op: o.kind().as_str().to_string(),
            subject: o.okta_id.to_string(),
            label: o.user_name.clone(),
            action: to_value(&o.action),
            reason: o.reason.clone(),
        }
    }

    fn from_group(o: &GroupOperation) -> Self {
        SavedOp {
            op: o.kind().as_str().to_string(),
            subject: o.okta_id.to_string(),
            label: o.display_name.clone(),
            action: to_value(&o.action),
            reason: o.reason.clone(),
        }
    }

    /// The canonical entry compared between a saved and a fresh plan.
    fn key(&self) -> String {
        canonical(&serde_json::json!({
            "op": self.op,
            "subject": self.subject,
            "label": self.label,
            "action": self.action,
        }))
    }

    fn describe(&self) -> String {
        format!("{} {} ({})", self.op, self.label, self.subject)
    }
}

/// The plan's operations as saved entries, users first, in plan order.
pub fn operations(users: &[Operation], groups: Option<&[GroupOperation]>) -> Vec<SavedOp> {
    users
        .iter()
        .map(SavedOp::from_user)
        .chain(groups.unwrap_or(&[]).iter().map(SavedOp::from_group))
        .collect()
}

/// The deactivation policy the plan was computed under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPolicy {
    /// `[sync] max_deactivations` at the time.
    pub max_deactivations: usize,
    /// `--allow-deactivations N`: the reviewer's approval of a plan above the limit.
    pub allow_deactivations: Option<usize>,
}

/// What the plan was computed from, each part a SHA-256 (hex) so a reviewer can see which
/// input moved; `fingerprint` is the hash over all of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedInputs {
    /// The Okta app users (mapped), the skipped ones, and the pushed groups with members.
    pub okta_read: String,
    /// `j<max journal id>-<hash of the user and group snapshot rows>`.
    pub snapshot_generation: String,
    /// Every Postman member and group, on full runs.
    pub postman_listing: Option<String>,
    /// org URL, app id, SCIM URL, state path.
    pub config: String,
}

/// A saved plan, as the file holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format: u32,
    pub plan_id: String,
    /// When the plan was computed (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// The state file and Okta app it was made for (`apply` refuses another).
    pub state_path: String,
    pub okta_org_url: String,
    pub app_id: String,
    pub scim_url: String,
    /// Whether it was computed against a full Postman listing (`apply` re-plans the same way).
    pub full: bool,
    pub policy: SavedPolicy,
    pub inputs: SavedInputs,
    pub fingerprint: String,
    pub operations: Vec<SavedOp>,
    /// SHA-256 (hex) over the canonical JSON of every other field.
    pub checksum: String,
}

/// The config a plan is bound to.
#[derive(Clone, Debug)]
pub struct Target {
    pub okta_org_url: String,
    pub app_id: String,
    pub scim_url: String,
    pub state_path: String,
}

impl Target {
    /// The state path as an absolute path with its directory resolved, so `./state.db` and
    /// `/var/lib/x/state.db` name the same file whether or not it exists yet.
    pub fn resolve_state_path(p: &Path) -> String {
        let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let resolved = match (abs.parent(), abs.file_name()) {
            (Some(dir), Some(name)) => dir
                .canonicalize()
                .map(|d| d.join(name))
                .unwrap_or_else(|_| abs.clone()),
            _ => abs.clone(),
        };
        resolved.display().to_string()
    }
}

/// What the engine read before planning, for the fingerprint.
pub struct Inputs<'a> {
    pub okta: &'a OktaRead,
    pub groups_read: Option<&'a GroupRead>,
    pub journal_max_id: i64,
    pub snapshot: &'a BTreeMap<OktaUserId, ManagedUser>,
    pub group_snapshot: Option<&'a BTreeMap<OktaGroupId, ManagedGroup>>,
    pub postman_users: Option<&'a [PostmanUser]>,
    pub postman_groups: Option<&'a [PostmanGroup]>,
    pub target: &'a Target,
}

/// SHA-256 over length-prefixed, labelled sections, so no two inputs can encode alike.
struct Hasher(Context);

impl Hasher {
    fn new() -> Self {
        Hasher(Context::new(&SHA256))
    }
    fn part<T: Serialize + ?Sized>(&mut self, label: &str, value: &T) {
        let bytes = canonical(&to_value(value));
        for b in [label.as_bytes(), bytes.as_bytes()] {
            self.0.update(&(b.len() as u64).to_be_bytes());
            self.0.update(b);
        }
    }
    fn hex(self) -> String {
        hex(self.0.finish().as_ref())
    }
}

impl Inputs<'_> {
    pub fn fingerprint(&self) -> SavedInputs {
        let mut okta = Hasher::new();
        okta.part("users", &self.okta.users);
        okta.part("skipped", &self.okta.skipped);
        okta.part("complete", &self.okta.complete);
        if let Some(g) = self.groups_read {
            okta.part("groups", &g.groups);
            okta.part("unresolved", &g.unresolved);
        }
        let mut snap = Hasher::new();
        snap.part("users", self.snapshot);
        if let Some(g) = self.group_snapshot {
            snap.part("groups", g);
        }
        let postman_listing = self.postman_users.map(|users| {
            // Postman's listing order is not ours to rely on: sort by SCIM id.
            let mut users: Vec<&PostmanUser> = users.iter().collect();
            users.sort_by(|a, b| a.id.cmp(&b.id));
            let mut h = Hasher::new();
            h.part("users", &users);
            if let Some(groups) = self.postman_groups {
                let mut groups: Vec<&PostmanGroup> = groups.iter().collect();
                groups.sort_by(|a, b| a.id.cmp(&b.id));
                h.part("groups", &groups);
            }
            h.hex()
        });
        let mut config = Hasher::new();
        config.part("org_url", &self.target.okta_org_url);
        config.part("app_id", &self.target.app_id);
        config.part("scim_url", &self.target.scim_url);
        config.part("state_path", &self.target.state_path);
        SavedInputs {
            okta_read: okta.hex(),
            snapshot_generation: format!("j{}-{}", self.journal_max_id, &snap.hex()[..16]),
            postman_listing,
            config: config.hex(),
        }
    }
}

impl SavedInputs {
    fn fingerprint(&self) -> String {
        let mut h = Hasher::new();
        h.part("inputs", self);
        h.hex()
    }

    /// Which inputs differ from `other`, in words.
    pub fn changed(&self, other: &SavedInputs) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.okta_read != other.okta_read {
            out.push("the Okta read");
        }
        if self.snapshot_generation != other.snapshot_generation {
            out.push("the state database");
        }
        if self.postman_listing != other.postman_listing {
            out.push("the Postman listing");
        }
        if self.config != other.config {
            out.push("the configuration");
        }
        out
    }
}

impl SavedPlan {
    /// A plan with a fresh random id, its fingerprint and its checksum.
    pub fn new(
        created_at: DateTime<Utc>,
        target: &Target,
        full: bool,
        policy: SavedPolicy,
        inputs: SavedInputs,
        operations: Vec<SavedOp>,
    ) -> Self {
        let mut plan = SavedPlan {
            format: FORMAT_VERSION,
            plan_id: format!("plan-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
            created_at,
            state_path: target.state_path.clone(),
            okta_org_url: target.okta_org_url.clone(),
            app_id: target.app_id.clone(),
            scim_url: target.scim_url.clone(),
            full,
            policy,
            fingerprint: inputs.fingerprint(),
            inputs,
            operations,
            checksum: String::new(),
        };
        plan.checksum = checksum_of(&to_value(&plan));
        plan
    }

    /// The file's text: pretty JSON (for the reviewer), whose canonical form the checksum covers.
    pub fn to_file_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parses a plan file and verifies its checksum and format version.
    pub fn from_file_text(text: &[u8]) -> Result<Self, LoadError> {
        let value: Value =
            serde_json::from_slice(text).map_err(|e| LoadError::Damaged(e.to_string()))?;
        let stated = value
            .get("checksum")
            .and_then(Value::as_str)
            .ok_or_else(|| LoadError::Damaged("it has no checksum".into()))?
            .to_string();
        if checksum_of(&value) != stated {
            return Err(LoadError::Checksum);
        }
        if value.get("format").and_then(Value::as_u64) != Some(u64::from(FORMAT_VERSION)) {
            return Err(LoadError::Version(
                value.get("format").cloned().unwrap_or(Value::Null),
            ));
        }
        let plan: SavedPlan =
            serde_json::from_value(value).map_err(|e| LoadError::Damaged(e.to_string()))?;
        if plan.inputs.fingerprint() != plan.fingerprint {
            return Err(LoadError::Damaged(
                "its fingerprint does not match its inputs".into(),
            ));
        }
        Ok(plan)
    }

    /// The deactivations the plan holds (users, and members a group deletion costs access).
    pub fn deactivations(&self) -> usize {
        self.operations
            .iter()
            .map(|o| match o.op.as_str() {
                "deactivate" => 1,
                "group_delete" => o
                    .action
                    .get("loses_access")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len),
                _ => 0,
            })
            .sum()
    }
}

/// Why a plan file cannot be used as it is.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("its checksum does not match its content: the file was altered or damaged after it was saved")]
    Checksum,
    #[error("it is not a readable saved plan ({0})")]
    Damaged(String),
    #[error("it is saved in format {0}, which this version does not read")]
    Version(Value),
}

/// Differences between a saved plan and a fresh one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlanDiff {
    pub only_in_saved: Vec<SavedOp>,
    pub only_in_fresh: Vec<SavedOp>,
}

impl PlanDiff {
    /// The refusal's wording: what moved, and what to do.
    pub fn explain(&self, plan_id: &str) -> String {
        let subjects = |ops: &[SavedOp]| -> BTreeMap<(String, String), ()> {
            ops.iter()
                .map(|o| ((o.op.clone(), o.subject.clone()), ()))
                .collect()
        };
        let (in_saved, in_fresh) = (subjects(&self.only_in_saved), subjects(&self.only_in_fresh));
        let list = |ops: &[SavedOp], other: &BTreeMap<(String, String), ()>| {
            ops.iter()
                .map(|o| {
                    if other.contains_key(&(o.op.clone(), o.subject.clone())) {
                        format!("{} [details differ]", o.describe())
                    } else {
                        o.describe()
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = format!(
            "the saved plan {plan_id} no longer matches what Okta and Postman hold now, so it was \
             not applied and nothing was changed"
        );
        if !self.only_in_saved.is_empty() {
            let _ = write!(
                s,
                ". Only in the saved plan ({}): {}",
                self.only_in_saved.len(),
                list(&self.only_in_saved, &in_fresh)
            );
        }
        if !self.only_in_fresh.is_empty() {
            let _ = write!(
                s,
                ". Only in a fresh plan ({}): {}",
                self.only_in_fresh.len(),
                list(&self.only_in_fresh, &in_saved)
            );
        }
        s.push_str(
            ". Make a fresh plan with `reconcile --dry-run --save-plan FILE`, review it, and apply that",
        );
        s
    }
}

/// Compares the operations as a multiset of canonical entries (order does not matter: the
/// engine orders them itself). `None` when they are the same.
pub fn compare(saved: &[SavedOp], fresh: &[SavedOp]) -> Option<PlanDiff> {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for o in saved {
        *counts.entry(o.key()).or_default() += 1;
    }
    for o in fresh {
        *counts.entry(o.key()).or_default() -= 1;
    }
    if counts.values().all(|n| *n == 0) {
        return None;
    }
    // Each surplus entry is listed once per extra copy.
    let pick = |ops: &[SavedOp], sign: i64| -> Vec<SavedOp> {
        let mut left = counts.clone();
        ops.iter()
            .filter(|o| {
                let n = left.entry(o.key()).or_default();
                if *n * sign > 0 {
                    *n -= sign;
                    true
                } else {
                    false
                }
            })
            .cloned()
            .collect()
    };
    Some(PlanDiff {
        only_in_saved: pick(saved, 1),
        only_in_fresh: pick(fresh, -1),
    })
}

// ---- encoding ----------------------------------------------------------------------------------

fn to_value<T: Serialize + ?Sized>(v: &T) -> Value {
    // Our plan types serialize infallibly (string keys, no non-finite floats).
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// JSON with object keys sorted at every level and no whitespace: the same value always encodes
/// to the same bytes, whatever map type serde_json was built with.
pub fn canonical(v: &Value) -> String {
    fn go(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    go(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    go(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    go(v, &mut out);
    out
}

/// SHA-256 over the canonical JSON of `plan` without its `checksum` field.
fn checksum_of(plan: &Value) -> String {
    let mut v = plan.clone();
    if let Value::Object(m) = &mut v {
        m.remove("checksum");
    }
    hex(ring::digest::digest(&SHA256, canonical(&v).as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

// ---- the file ----------------------------------------------------------------------------------

/// Why a plan file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("{path} exists and is not a regular file (a symlink, a directory or a device); choose another path for the plan")]
    NotRegular { path: PathBuf },
    #[error("cannot write the plan to {path}: {source}. Check that the directory exists and is writable")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `text` to `path`, mode 0600, atomically: into a new temp file in the same directory
/// (created exclusively, never through a symlink), synced, then renamed over `path`. An existing
/// `path` is replaced only when it is a regular file; a symlink is never followed.
pub fn write_private(path: &Path, text: &str) -> Result<(), SaveError> {
    let io = |source| SaveError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => {
            return Err(SaveError::NotRegular {
                path: path.to_path_buf(),
            })
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plan".into());
    let tmp = dir.join(format!(
        ".{name}.tmp-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable once the directory is synced.
        #[cfg(unix)]
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Reads a plan file, refusing one larger than [`MAX_FILE_BYTES`].
pub fn read_file(path: &Path) -> Result<Vec<u8>, std::io::Error> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "the file is larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: &str, subject: &str, label: &str) -> SavedOp {
        SavedOp {
            op: kind.into(),
            subject: subject.into(),
            label: label.into(),
            action: serde_json::json!({"action": kind, "scim_id": format!("s-{subject}")}),
            reason: "because".into(),
        }
    }

    fn target() -> Target {
        Target {
            okta_org_url: "https://example.okta.com/".into(),
            app_id: "0oa1".into(),
            scim_url: "https://api.getpostman.com/scim/v2/".into(),
            state_path: "/var/lib/x/state.db".into(),
        }
    }

    fn inputs() -> SavedInputs {
        SavedInputs {
            okta_read: "a".into(),
            snapshot_generation: "j0-b".into(),
            postman_listing: None,
            config: "c".into(),
        }
    }

    #[test]
    fn the_same_operations_in_another_order_compare_equal() {
        let a = vec![op("deactivate", "1", "ann"), op("create", "2", "bob")];
        let b = vec![op("create", "2", "bob"), op("deactivate", "1", "ann")];
        assert_eq!(compare(&a, &b), None);
        // The reason's wording is not a change.
        let mut c = b.clone();
        c[0].reason = "other words".into();
        assert_eq!(compare(&a, &c), None);
    }

    #[test]
    fn an_extra_or_changed_operation_is_listed_on_its_side() {
        let saved = vec![op("deactivate", "1", "ann")];
        let mut renamed = op("deactivate", "1", "ann");
        renamed.label = "ann2".into();
        let fresh = vec![renamed.clone(), op("deactivate", "3", "cat")];
        let d = compare(&saved, &fresh).expect("differs");
        assert_eq!(d.only_in_saved, saved);
        assert_eq!(d.only_in_fresh, fresh);
        let msg = d.explain("plan-x");
        assert!(msg.contains("deactivate ann (1) [details differ]"), "{msg}");
        assert!(msg.contains("deactivate cat (3)"), "{msg}");
        // A duplicate counts.
        let d = compare(&saved, &[saved[0].clone(), saved[0].clone()]).expect("differs");
        assert_eq!((d.only_in_saved.len(), d.only_in_fresh.len()), (0, 1));
    }

    #[test]
    fn a_saved_plan_round_trips_and_any_edit_breaks_its_checksum() {
        let plan = SavedPlan::new(
            Utc::now(),
            &target(),
            true,
            SavedPolicy {
                max_deactivations: 1,
                allow_deactivations: Some(2),
            },
            inputs(),
            vec![op("deactivate", "1", "ann"), op("deactivate", "2", "bob")],
        );
        let text = plan.to_file_text();
        assert_eq!(
            SavedPlan::from_file_text(text.as_bytes()).expect("loads"),
            plan
        );
        assert_eq!(plan.deactivations(), 2);
        let edited = text.replace("\"allow_deactivations\": 2", "\"allow_deactivations\": 200");
        assert_ne!(edited, text);
        assert!(matches!(
            SavedPlan::from_file_text(edited.as_bytes()),
            Err(LoadError::Checksum)
        ));
        assert!(matches!(
            SavedPlan::from_file_text(b"{not json"),
            Err(LoadError::Damaged(_))
        ));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = serde_json::json!({"b": [{"z": 1, "a": 2}], "a": "x"});
        assert_eq!(canonical(&v), r#"{"a":"x","b":[{"a":2,"z":1}]}"#);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private_replaces_a_regular_file_and_never_follows_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plan.json");
        write_private(&path, "one").expect("write");
        write_private(&path, "two").expect("replace");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "two");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").expect("target");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(matches!(
            write_private(&link, "x"),
            Err(SaveError::NotRegular { .. })
        ));
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep");
        // No temp file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 3);
    }
}
