//! `portcullis scaffold policy`: a new policy project that builds and passes
//! its own tests right away.
//!
//! Every template is the same small policy (reject objects carrying a denied
//! label) with the same test file, so that each language shows the same
//! thing; the suite builds and tests each one (host/tests/scaffold.rs).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// The contract every component template is built against.
const POLICY_WIT: &str = include_str!("../../../../../wit/policy.wit");

#[derive(Args)]
pub struct PolicyArgs {
    /// The language and ABI.
    #[arg(long, value_enum)]
    lang: Lang,
    /// Where to create the project (default: a new directory named NAME).
    #[arg(long)]
    path: Option<PathBuf>,
    /// The policy's name: lower-case letters, digits and `-`.
    name: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Lang {
    /// Rust, Kubewarden's waPC protocol (kubewarden-policy-sdk).
    RustWapc,
    /// Rust, a `portcullis:policy` component (wit-bindgen).
    RustComponent,
    /// Python, a component (componentize-py).
    Python,
    /// JavaScript, a component (componentize-js).
    Javascript,
    /// Go, a WASI command module (GOOS=wasip1), Kubewarden's `wasi` mode.
    Go,
}

/// `(path, contents)` of a template file.
type File = (&'static str, &'static str);

macro_rules! template {
    ($($path:literal => $file:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("templates/", $file)))),*]
    };
}

const COMMON: &[File] = template![
    "README.md" => "common/README.md",
    "metadata.yml" => "common/metadata.yml",
    "portcullis-test.yaml" => "common/portcullis-test.yaml",
    ".gitignore" => "common/gitignore",
];

impl Lang {
    fn files(self) -> &'static [File] {
        match self {
            Lang::RustWapc => template![
                "Cargo.toml" => "rust-wapc/Cargo.toml",
                "src/lib.rs" => "rust-wapc/src/lib.rs",
                "build.sh" => "rust-wapc/build.sh",
            ],
            Lang::RustComponent => template![
                "Cargo.toml" => "rust-component/Cargo.toml",
                "src/lib.rs" => "rust-component/src/lib.rs",
                "build.sh" => "rust-component/build.sh",
                "wit/world.wit" => "component-wit/world.wit",
            ],
            Lang::Python => template![
                "app.py" => "python/app.py",
                "build.sh" => "python/build.sh",
                "wit/world.wit" => "component-wit/world.wit",
            ],
            Lang::Javascript => template![
                "policy.js" => "javascript/policy.js",
                "package.json" => "javascript/package.json",
                "build.sh" => "javascript/build.sh",
                "wit/world.wit" => "component-wit/world.wit",
            ],
            Lang::Go => template![
                "go.mod" => "go/go.mod",
                "main.go" => "go/main.go",
                "build.sh" => "go/build.sh",
            ],
        }
    }

    fn is_component(self) -> bool {
        matches!(self, Lang::RustComponent | Lang::Python | Lang::Javascript)
    }

    fn title(self) -> &'static str {
        match self {
            Lang::RustWapc => "Rust, Kubewarden waPC protocol",
            Lang::RustComponent => "Rust, WIT component",
            Lang::Python => "Python, WIT component",
            Lang::Javascript => "JavaScript, WIT component",
            Lang::Go => "Go, WASI command",
        }
    }

    fn execution_mode(self) -> &'static str {
        match self {
            Lang::RustWapc => "executionMode: kubewarden-wapc\n",
            Lang::Go => "executionMode: wasi\n",
            _ => "",
        }
    }

    fn build_needs(self) -> &'static str {
        match self {
            Lang::RustWapc => {
                "Needs Rust with the `wasm32-wasip1` target and `portcullis` on PATH."
            }
            Lang::RustComponent => {
                "Needs Rust with the `wasm32-wasip2` target and `portcullis` on PATH."
            }
            Lang::Python => {
                "Needs `componentize-py` (`pip install componentize-py`) and `portcullis` on PATH."
            }
            Lang::Javascript => {
                "Needs `npm install` (componentize-js) or `componentize-js` on PATH, and \
                 `portcullis` on PATH."
            }
            Lang::Go => "Needs Go 1.24 or newer and `portcullis` on PATH.",
        }
    }
}

/// The package version of the embedded contract, for the templates' worlds.
fn wit_version() -> anyhow::Result<&'static str> {
    POLICY_WIT
        .lines()
        .find_map(|l| l.trim().strip_prefix("package portcullis:policy@"))
        .and_then(|v| v.strip_suffix(';'))
        .context("the embedded wit/policy.wit has no package version")
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !name.contains("--")
}

pub fn policy(args: PolicyArgs) -> anyhow::Result<()> {
    if !valid_name(&args.name) {
        bail!(
            "{:?} is not a valid policy name: use lower-case letters, digits and single '-', \
             starting with a letter (it names the crate, the package and the world)",
            args.name
        );
    }
    let dir = args
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let wit_version = wit_version()?;
    let render = |text: &str| {
        text.replace("{{name}}", &args.name)
            .replace("{{crate}}", &args.name.replace('-', "_"))
            .replace("{{lang_title}}", args.lang.title())
            .replace("{{execution_mode}}", args.lang.execution_mode())
            .replace("{{build_needs}}", args.lang.build_needs())
            .replace("{{wit_version}}", wit_version)
    };
    let mut files: Vec<(&str, String)> = COMMON
        .iter()
        .chain(args.lang.files())
        .map(|(path, text)| (*path, render(text)))
        .collect();
    if args.lang.is_component() {
        files.push((
            "wit/deps/portcullis-policy/policy.wit",
            POLICY_WIT.to_string(),
        ));
    }
    for (path, text) in &files {
        write(&dir.join(path), text)?;
    }
    println!(
        "created {} ({}); next: cd {} && ./build.sh && portcullis test",
        dir.display(),
        args.lang.title(),
        dir.display()
    );
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "sh") {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_version() {
        assert!(valid_name("my-policy2"));
        for bad in ["", "My", "-a", "a-", "a--b", "a_b", "1a"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(wit_version().unwrap().starts_with("0."));
    }

    #[test]
    fn every_placeholder_is_filled() {
        for lang in Lang::value_variants() {
            let dir = tempfile::tempdir().unwrap();
            policy(PolicyArgs {
                lang: *lang,
                path: Some(dir.path().join("p")),
                name: "my-policy".into(),
            })
            .unwrap();
            for entry in walkdir::WalkDir::new(dir.path()) {
                let entry = entry.unwrap();
                if entry.file_type().is_file() {
                    let text = std::fs::read_to_string(entry.path()).unwrap();
                    assert!(!text.contains("{{"), "{}", entry.path().display());
                }
            }
            assert!(dir.path().join("p/portcullis-test.yaml").is_file());
        }
    }
}
