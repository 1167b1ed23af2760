//! BGP passwords from Kubernetes Secrets mounted as files (`BGPPeer.password.secretKeyRef`,
//! `BGPConfiguration.nodeMeshPassword`).
//!
//! calico-node reads these Secrets through the Kubernetes API; Calyx has no Kubernetes client,
//! so the DaemonSet mounts each Secret as a volume, which puts every key of Secret `<name>` in
//! the file `<dir>/<name>/<key>` (`dir` is `CALYX_BGP_SECRETS_DIR`, default
//! `/etc/calyx/bgp-secrets`). kubelet updates a mounted Secret in place (an atomic symlink
//! swap), so the daemon re-reads the files the configuration references every
//! [`POLL_INTERVAL`] and a changed password takes effect without a restart.
//!
//! The value is the file's bytes, exactly, as Calico uses a Secret's data (no trimming). A
//! reference that cannot be resolved is a [`Problem`] shown by `calyx node status` and counted
//! in `/metrics`; as in Calico (confd's `getPassword`), the peering is then configured without
//! a password (an MD5 peer refuses it, so nothing unauthenticated comes up there).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use calyx_datastore::resources::{BGPPassword, DEFAULT_BGP_CONFIGURATION};
use serde::{Deserialize, Serialize};

use crate::cluster::ClusterState;

/// How often the referenced files are read again.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The longest TCP MD5 key the kernel takes (`TCP_MD5SIG_MAXKEYLEN`).
const MAX_KEY_LEN: usize = 80;

/// A Secret key: `secretKeyRef.name` and `secretKeyRef.key`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SecretRef {
    /// The Secret's name (the directory under the secrets directory).
    pub name: String,
    /// The key in it (the file in that directory).
    pub key: String,
}

impl SecretRef {
    /// The reference of a `password` field, when it names a Secret key.
    pub fn of(password: Option<&BGPPassword>) -> Option<SecretRef> {
        let r = password?.secret_key_ref.as_ref()?;
        Some(SecretRef {
            name: r.name.clone(),
            key: r.key.clone(),
        })
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.name, self.key)
    }
}

/// A Secret key that could not be used, for `calyx node status` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Problem {
    /// The reference.
    pub secret: String,
    /// Which resources use it (`BGPPeer "tor"`, `BGPConfiguration "default"`).
    pub used_by: Vec<String>,
    /// Why it cannot be used.
    pub reason: String,
}

/// Every Secret key the BGP configuration references, with the resources that use it.
pub fn references(state: &ClusterState) -> BTreeMap<SecretRef, BTreeSet<String>> {
    let mut refs: BTreeMap<SecretRef, BTreeSet<String>> = BTreeMap::new();
    for (name, peer) in &state.bgp_peers {
        if let Some(r) = SecretRef::of(peer.spec.password.as_ref()) {
            refs.entry(r)
                .or_default()
                .insert(format!("BGPPeer {name:?}"));
        }
    }
    // Only the cluster-wide object's nodeMeshPassword counts, as in confd.
    if let Some(cfg) = state.bgp_configs.get(DEFAULT_BGP_CONFIGURATION) {
        if let Some(r) = SecretRef::of(cfg.spec.node_mesh_password.as_ref()) {
            refs.entry(r)
                .or_default()
                .insert(format!("BGPConfiguration {DEFAULT_BGP_CONFIGURATION:?}"));
        }
    }
    refs
}

/// The file of `r` under `dir`, or why there is none: a name or key that is not one path
/// component (a Calico-written object is read leniently, so it may hold anything) must not
/// reach outside the secrets directory.
fn path_of(dir: &Path, r: &SecretRef) -> Result<PathBuf, String> {
    for part in [&r.name, &r.key] {
        if part.is_empty() || part == "." || part == ".." || part.contains(['/', '\0']) {
            return Err(format!("{part:?} is not a valid Secret name or key"));
        }
    }
    Ok(dir.join(&r.name).join(&r.key))
}

/// Reads one password: the file's bytes as UTF-8, at most 80 bytes (what TCP MD5 takes).
pub fn read(dir: &Path, r: &SecretRef) -> Result<String, String> {
    let path = path_of(dir, r)?;
    // At most one byte more than a key may have: a huge file is refused, not read whole.
    let limit = u64::try_from(MAX_KEY_LEN + 1).unwrap_or(u64::MAX);
    let bytes = match std::fs::File::open(&path).and_then(|f| {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(f, limit), &mut b).map(|_| b)
    }) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{} does not exist (is Secret {:?} mounted there?)",
                path.display(),
                r.name
            ))
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if bytes.len() > MAX_KEY_LEN {
        return Err(format!(
            "{} holds more than {MAX_KEY_LEN} bytes; a TCP MD5 key has at most {MAX_KEY_LEN}",
            path.display()
        ));
    }
    if bytes.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

/// The passwords resolved so far, read again on every [`Secrets::refresh`].
#[derive(Debug, Default)]
pub struct Secrets {
    dir: PathBuf,
    values: BTreeMap<SecretRef, String>,
    problems: Vec<Problem>,
}

impl Secrets {
    /// Passwords under `dir` (nothing read yet).
    pub fn new(dir: PathBuf) -> Secrets {
        Secrets {
            dir,
            ..Secrets::default()
        }
    }

    /// Reads every file `state` references; returns whether any password (or problem)
    /// changed since the last call, i.e. whether the BGP plan must be made again.
    pub fn refresh(&mut self, state: &ClusterState) -> bool {
        let mut values = BTreeMap::new();
        let mut problems = Vec::new();
        for (r, users) in references(state) {
            match read(&self.dir, &r) {
                Ok(v) => {
                    values.insert(r, v);
                }
                Err(reason) => {
                    // A password read before stays in use: a Secret volume being updated, a
                    // file briefly unreadable or removed by mistake must not turn a protected
                    // session into one without TCP MD5 (confd would render it without). Only
                    // a password never read leaves the peering without one.
                    let reason = match self.values.get(&r) {
                        Some(last) => {
                            values.insert(r.clone(), last.clone());
                            format!("{reason}; the password read before stays in use")
                        }
                        None => reason,
                    };
                    problems.push(Problem {
                        secret: r.to_string(),
                        used_by: users.into_iter().collect(),
                        reason,
                    });
                }
            }
        }
        let changed = values != self.values || problems != self.problems;
        if changed {
            for p in &problems {
                if !self.problems.contains(p) {
                    tracing::warn!(secret = %p.secret, used_by = ?p.used_by, reason = %p.reason,
                        "BGP password unavailable");
                }
            }
            for r in values.keys() {
                if self.values.get(r) != values.get(r) {
                    tracing::info!(secret = %r, "BGP password loaded");
                }
            }
        }
        self.values = values;
        self.problems = problems;
        changed
    }

    /// The password of `password`, when it references a Secret key that could be read.
    pub fn password(&self, password: Option<&BGPPassword>) -> Option<String> {
        self.values.get(&SecretRef::of(password)?).cloned()
    }

    /// The references that could not be resolved at the last refresh.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// A table of resolved passwords, for tests of the translation.
    #[cfg(test)]
    pub fn with_values(values: &[(&str, &str, &str)]) -> Secrets {
        Secrets {
            dir: PathBuf::new(),
            values: values
                .iter()
                .map(|(n, k, v)| {
                    (
                        SecretRef {
                            name: (*n).into(),
                            key: (*k).into(),
                        },
                        (*v).into(),
                    )
                })
                .collect(),
            problems: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calyx_datastore::resources::{BGPConfiguration, BGPPeer, BGPPeerSpec, SecretKeyRef};

    fn pw(name: &str, key: &str) -> Option<BGPPassword> {
        Some(BGPPassword {
            secret_key_ref: Some(SecretKeyRef {
                name: name.into(),
                key: key.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn files_are_read_exactly_and_changes_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bgp")).unwrap();
        std::fs::write(dir.path().join("bgp/tor"), "s3cret\n").unwrap();
        let mut state = ClusterState::default();
        let spec = BGPPeerSpec {
            password: pw("bgp", "tor"),
            ..Default::default()
        };
        state
            .bgp_peers
            .insert("tor".into(), BGPPeer::new("tor", spec));
        let mut cfg = BGPConfiguration::new("default", Default::default());
        cfg.spec.node_mesh_password = pw("bgp", "mesh");
        state.bgp_configs.insert("default".into(), cfg);

        let mut s = Secrets::new(dir.path().to_path_buf());
        assert!(s.refresh(&state));
        assert_eq!(
            s.password(pw("bgp", "tor").as_ref()).as_deref(),
            Some("s3cret\n")
        );
        assert_eq!(s.password(pw("bgp", "mesh").as_ref()), None);
        assert_eq!(s.problems().len(), 1);
        assert_eq!(s.problems()[0].secret, "bgp/mesh");
        assert_eq!(s.problems()[0].used_by, ["BGPConfiguration \"default\""]);
        assert!(
            s.problems()[0].reason.contains("does not exist"),
            "{:?}",
            s.problems()
        );
        assert!(!s.refresh(&state), "nothing changed");

        std::fs::write(dir.path().join("bgp/mesh"), "m").unwrap();
        std::fs::write(dir.path().join("bgp/tor"), "other").unwrap();
        assert!(s.refresh(&state));
        assert!(s.problems().is_empty());
        assert_eq!(
            s.password(pw("bgp", "tor").as_ref()).as_deref(),
            Some("other")
        );
        assert_eq!(s.password(pw("bgp", "mesh").as_ref()).as_deref(), Some("m"));

        // A password read before survives its file going away (reported), and a new file is
        // taken again.
        std::fs::remove_file(dir.path().join("bgp/tor")).unwrap();
        assert!(s.refresh(&state));
        assert_eq!(
            s.password(pw("bgp", "tor").as_ref()).as_deref(),
            Some("other")
        );
        assert_eq!(s.problems().len(), 1);
        assert!(
            s.problems()[0].reason.contains("read before stays in use"),
            "{:?}",
            s.problems()
        );
        std::fs::write(dir.path().join("bgp/tor"), "third").unwrap();
        assert!(s.refresh(&state));
        assert!(s.problems().is_empty());
        assert_eq!(
            s.password(pw("bgp", "tor").as_ref()).as_deref(),
            Some("third")
        );
    }

    #[test]
    fn bad_references_and_values_are_problems_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("s")).unwrap();
        std::fs::write(dir.path().join("s/long"), "x".repeat(100_000)).unwrap();
        std::fs::write(dir.path().join("s/empty"), "").unwrap();
        std::fs::write(dir.path().join("s/bin"), [0xff, 0xfe]).unwrap();
        let r = |n: &str, k: &str| SecretRef {
            name: n.into(),
            key: k.into(),
        };
        for (name, key, want) in [
            ("s", "long", "at most 80"),
            ("s", "empty", "is empty"),
            ("s", "bin", "not UTF-8"),
            ("..", "x", "not a valid"),
            ("s", "../s/long", "not a valid"),
            ("", "k", "not a valid"),
            ("s", "missing", "does not exist"),
        ] {
            let e = read(dir.path(), &r(name, key)).unwrap_err();
            assert!(e.contains(want), "{name}/{key}: {e}");
        }
    }
}
