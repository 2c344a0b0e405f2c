//! A real OCI registry (CNCF distribution) on loopback, plain HTTP, holding
//! the sample policies that namespaced policies must fetch with
//! `registry://` (they may not use `file://`).
//!
//! Modules are published with the `portcullis push` CLI, as a policy author
//! would; the policy-server pulls them over plain HTTP because the test's
//! PolicyServer lists the registry in `insecureSources`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portcullis_tests::control_plane::target_dir;
use portcullis_tests::policy_server as ps_support;

use super::{Proc, output_text, unique};

/// The `registry` binary (`scripts/go-tools.sh registry`).
fn registry_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PORTCULLIS_REGISTRY_BIN").filter(|p| !p.is_empty()) {
        return p.into();
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    PathBuf::from(home).join(".cache/portcullis/bin/registry")
}

/// A running registry; stopped on drop.
pub struct Registry {
    proc: Proc,
    port: u16,
    dir: PathBuf,
}

impl Registry {
    /// Starts a registry on a free loopback port.
    pub fn start() -> Registry {
        let bin = registry_bin();
        assert!(
            bin.is_file(),
            "{} is missing: run `scripts/go-tools.sh registry`",
            bin.display()
        );
        let dir = target_dir().join(unique("test-registry"));
        std::fs::create_dir_all(&dir).expect("registry dir");
        let port = super::pod::free_port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: portcullis-test\n",
                dir.join("data").display()
            ),
        )
        .expect("registry config");
        let proc = Proc::spawn(
            "registry",
            Command::new(bin)
                .arg("serve")
                .arg(&config)
                .env("OTEL_TRACES_EXPORTER", "none")
                .env("OTEL_METRICS_EXPORTER", "none")
                .env("OTEL_LOGS_EXPORTER", "none"),
            dir.join("registry.log"),
        );
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the registry does not listen on {port}:\n{}",
                proc.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { proc, port, dir }
    }

    /// `127.0.0.1:<port>`, as listed in `insecureSources`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Publishes the sample policy `name` (e.g. `pod-privileged-wapc`) as
    /// `registry://<host>/policies/<name>:v1` and returns that reference.
    pub fn push_sample(&self, name: &str) -> String {
        let module = ps_support::policies_dir().join(format!("{name}.wasm"));
        assert!(
            module.is_file(),
            "{} is missing: run `scripts/build-policies.sh`",
            module.display()
        );
        let portcullis = ps_support::binary_path()
            .expect("policy-server binary")
            .with_file_name("portcullis");
        let sources = self.dir.join("sources.yml");
        std::fs::write(
            &sources,
            format!("insecure_sources: [\"{}\"]\n", self.host()),
        )
        .expect("sources.yml");
        let reference = format!("registry://{}/policies/{name}:v1", self.host());
        let out = Command::new(&portcullis)
            .arg("push")
            .arg(&module)
            .arg(&reference)
            .arg("--sources-path")
            .arg(&sources)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", portcullis.display()));
        assert!(
            out.status.success(),
            "portcullis push {reference}:\n{}",
            output_text(&out)
        );
        reference
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.proc.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
