//! The project's shell scripts (`scripts/`, `dev`, `.ci/run`, the Justfile):
//! they parse, and none of those under `set -o pipefail` pipes into a reader
//! that quits early.
//!
//! Under pipefail, `producer | head -n1` or `producer | grep -q x` fails with
//! the producer's SIGPIPE (exit 141) whenever the reader is gone before the
//! producer's last write: a race that a warm machine wins and a cold one loses
//! (it once failed CI in `scripts/kind.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every bash script of the project: `dev`, `.ci/run` and whatever under
/// `scripts/` starts with a bash shebang.
fn bash_scripts() -> Vec<PathBuf> {
    let root = repo_root();
    let mut scripts = vec![root.join("dev"), root.join(".ci/run")];
    let mut dirs = vec![root.join("scripts")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("scripts/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if std::fs::read_to_string(&path)
                .map(|text| {
                    let first = text.lines().next().unwrap_or_default();
                    first.starts_with("#!") && first.contains("bash")
                })
                .unwrap_or(false)
            {
                scripts.push(path);
            }
        }
    }
    scripts.sort();
    scripts
}

/// The readers that stop reading before their input ends.
fn quits_early(reader: &str) -> bool {
    let words: Vec<&str> = reader.split_whitespace().collect();
    match words.first() {
        Some(&"head") => true,
        Some(&"grep") => words[1..].iter().any(|word| {
            (word.starts_with('-')
                && !word.starts_with("--")
                && (word.contains('q') || word.contains('m')))
                || *word == "--quiet"
                || word.starts_with("--max-count")
        }),
        _ => false,
    }
}

#[test]
fn every_script_parses() {
    let scripts = bash_scripts();
    assert!(scripts.len() > 10, "found only {scripts:?}");
    for script in scripts {
        let out = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn no_pipefail_script_pipes_into_an_early_quitting_reader() {
    let mut offences = Vec::new();
    // The Justfile's recipes run under `bash -euo pipefail` too.
    let mut files = bash_scripts();
    files.push(repo_root().join("Justfile"));
    for script in files {
        let text = std::fs::read_to_string(&script).expect("a readable script");
        if !text.contains("pipefail") {
            continue;
        }
        for (number, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with('#') {
                continue;
            }
            // `a || b` is not a pipe.
            let pipes = code.replace("||", "\u{0}");
            for reader in pipes.split('|').skip(1) {
                if quits_early(reader) {
                    offences.push(format!("{}:{}: {line}", script.display(), number + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "pipes into a reader that quits early (SIGPIPE under pipefail):\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_check_finds_what_it_looks_for() {
    assert!(quits_early(" head -n1"));
    assert!(quits_early(" grep -qx cluster"));
    assert!(quits_early(" grep -m5 x"));
    assert!(!quits_early(" grep -v x"));
    assert!(!quits_early(" tail -n1"));
    assert!(!quits_early(" sed -n 1,5p"));
}
