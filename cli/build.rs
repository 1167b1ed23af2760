//! Records the commit the binary was built from, for `calyx version` (`Git commit:`), as
//! calicoctl's build stamps GIT_REVISION.
//!
//! Order: `CALYX_GIT_COMMIT` from the environment (a container build without `.git` can pass
//! it in), else `git rev-parse --short HEAD`, else `unknown`. Cargo reruns this when HEAD moves
//! (a commit, a checkout) because the files git keeps HEAD and the current branch in are
//! declared as inputs; a dirty tree is not marked (calicoctl does not mark it either).

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CALYX_GIT_COMMIT");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let from_env = std::env::var("CALYX_GIT_COMMIT")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let commit = from_env
        .or_else(|| git(&dir, &["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // The files whose change means another commit: HEAD (per worktree), the branch it points
    // to and packed-refs (shared by every worktree).
    if let Some(git_dir) = git(&dir, &["rev-parse", "--absolute-git-dir"]) {
        let git_dir = PathBuf::from(git_dir);
        println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
        let common = git(&dir, &["rev-parse", "--git-common-dir"])
            .map(|c| {
                let c = PathBuf::from(c);
                if c.is_absolute() {
                    c
                } else {
                    dir.join(c)
                }
            })
            .unwrap_or_else(|| git_dir.clone());
        println!(
            "cargo:rerun-if-changed={}",
            common.join("packed-refs").display()
        );
        if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", common.join(branch).display());
        }
    }
    println!("cargo:rustc-env=CALYX_GIT_COMMIT={commit}");
}
