//! A policy-server Pod as the kubelet would run it, for tests on the local
//! control plane (no kubelet, no container runtime, no cluster network):
//!
//! - **The container**: the `policy-server` binary, on 127.0.0.1, with the
//!   environment of the Deployment's container, its mount paths mapped to a
//!   local directory, and the explicit flags `--policies --cert-file
//!   --key-file --port --readiness-probe-port` (and `--client-ca-file` when
//!   set) taken from that environment, plus `--addr 127.0.0.1`, JSON logs and
//!   a shared compiled-module cache (test speed).
//! - **The ConfigMap and Secret volumes**: written the way the kubelet's
//!   atomic writer does (`..<version>/` directory, `..data` symlink swapped
//!   by a rename, one symlink per key) from the live objects, and rewritten
//!   the same way on [`SimulatedPod::update_config`].
//! - **Pod readiness**: [`mark_ready`] patches the Pod's status (Ready,
//!   podIP 127.0.0.1) as the kubelet would once the container passes its
//!   probe; kube-controller-manager then updates the Deployment's status.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use portcullis_tests::control_plane::target_dir;
use portcullis_tests::e2e::{self, Kubectl};
use portcullis_tests::policy_server as ps_support;
use serde_json::{Value, json};

use super::{Proc, jstr};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Two different free ports (webhook, readiness probe).
pub fn free_ports() -> (u16, u16) {
    loop {
        let (a, b) = (free_port(), free_port());
        if a != b {
            return (a, b);
        }
    }
}

/// Writes `files` into `dir` as the kubelet's atomic writer does for a
/// ConfigMap or Secret volume: a fresh `..<version>` directory, `..data`
/// pointing at it (swapped with a rename), and `<key>` → `..data/<key>`.
pub fn kubelet_write(dir: &Path, version: u32, files: &BTreeMap<String, Vec<u8>>) {
    std::fs::create_dir_all(dir).expect("volume dir");
    let versioned = format!("..{version}");
    let vdir = dir.join(&versioned);
    std::fs::create_dir(&vdir).expect("versioned dir");
    for (name, bytes) in files {
        std::fs::write(vdir.join(name), bytes).expect("write volume file");
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&versioned, &tmp).expect("..data_tmp");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for name in files.keys() {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).expect("key symlink");
        }
    }
    if version > 1 {
        let _ = std::fs::remove_dir_all(dir.join(format!("..{}", version - 1)));
    }
}

/// `data` of a ConfigMap, or the base64-decoded `data` of a Secret, keeping
/// only the `items` of the volume when it lists some (with their paths).
pub fn volume_files(
    object: &Value,
    base64: bool,
    items: Option<&Value>,
) -> BTreeMap<String, Vec<u8>> {
    let data = object["data"].as_object().cloned().unwrap_or_default();
    let decode = |v: &Value| {
        let s = v.as_str().unwrap_or_default();
        if base64 {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .expect("secret data is base64")
        } else {
            s.as_bytes().to_vec()
        }
    };
    match items.and_then(Value::as_array) {
        Some(items) => items
            .iter()
            .filter_map(|item| {
                let value = data.get(jstr(item, "/key"))?;
                Some((jstr(item, "/path").to_string(), decode(value)))
            })
            .collect(),
        None => data.iter().map(|(k, v)| (k.clone(), decode(v))).collect(),
    }
}

/// `GET /readiness` on the plain-HTTP probe port: the parsed report, if any.
pub fn readiness(port: u16) -> Option<Value> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /readiness HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// Marks `pod` (`pod/<name>`) Ready with IP 127.0.0.1, as the kubelet would.
pub fn mark_ready(k: &Kubectl, namespace: &str, pod: &str) {
    k.ok(&[
        "-n",
        namespace,
        "patch",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","podIP":"127.0.0.1","podIPs":[{"ip":"127.0.0.1"}],"conditions":[{"type":"Ready","status":"True"},{"type":"ContainersReady","status":"True"}]}}"#,
    ]);
}

/// The container's environment of a Deployment, by name.
pub fn container_env(deployment: &Value) -> BTreeMap<String, String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (jstr(e, "/name").to_string(), jstr(e, "/value").to_string()))
        .collect()
}

/// The policy-server of one Deployment, run as its container would be.
pub struct SimulatedPod {
    /// The container's environment, mount paths mapped to local directories.
    pub env: BTreeMap<String, String>,
    /// Local directory of the policies ConfigMap volume.
    pub config_dir: PathBuf,
    /// The running policy-server.
    pub server: Proc,
    dir: PathBuf,
    config_version: u32,
}

impl SimulatedPod {
    /// Lays out the volumes of `deployment`'s pod template under `dir/pod`,
    /// from the ConfigMaps and Secrets of namespace `ns` they name, and
    /// starts the policy-server with the container's environment.
    pub fn start(k: &Kubectl, ns: &str, deployment: &Value, dir: &Path) -> SimulatedPod {
        let template = &deployment["spec"]["template"]["spec"];
        let container = &template["containers"][0];
        let env = container_env(deployment);
        let volumes: BTreeMap<String, Value> = template["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .map(|v| (jstr(v, "/name").to_string(), v.clone()))
            .collect();
        let root = dir.join("pod");
        let mut mounts = Vec::new();
        let mut config_dir = None;
        for mount in container["volumeMounts"].as_array().expect("volumeMounts") {
            let mount_path = jstr(mount, "/mountPath").to_string();
            let local = root.join(mount_path.trim_start_matches('/'));
            let volume = &volumes[jstr(mount, "/name")];
            if volume.get("configMap").is_some() {
                let name = jstr(volume, "/configMap/name");
                let object = k
                    .get_json(Some(ns), "configmap", name)
                    .unwrap_or_else(|| panic!("ConfigMap {ns}/{name} of the pod"));
                kubelet_write(
                    &local,
                    1,
                    &volume_files(&object, false, volume.pointer("/configMap/items")),
                );
                if jstr(mount, "/name") == "policies" {
                    config_dir = Some(local.clone());
                }
            } else if volume.get("secret").is_some() {
                let name = jstr(volume, "/secret/secretName");
                let object = k
                    .get_json(Some(ns), "secret", name)
                    .unwrap_or_else(|| panic!("Secret {ns}/{name} of the pod"));
                kubelet_write(
                    &local,
                    1,
                    &volume_files(&object, true, volume.pointer("/secret/items")),
                );
            } else {
                assert!(volume.get("emptyDir").is_some(), "volume {volume}");
                std::fs::create_dir_all(&local).expect("emptyDir");
            }
            mounts.push((mount_path, local));
        }
        // Longest mount path first, so `/a/b` wins over `/a`.
        mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let remap = |value: &str| -> String {
            value
                .split(',')
                .map(|part| {
                    for (mount_path, local) in &mounts {
                        if let Some(rest) = part.strip_prefix(mount_path.as_str())
                            && (rest.is_empty() || rest.starts_with('/'))
                        {
                            return format!("{}{rest}", local.display());
                        }
                    }
                    part.to_string()
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let env: BTreeMap<String, String> =
            env.iter().map(|(k, v)| (k.clone(), remap(v))).collect();
        let server = spawn(&env, &dir.join("policy-server.log"));
        SimulatedPod {
            env,
            config_dir: config_dir.expect("a policies ConfigMap volume"),
            server,
            dir: dir.to_path_buf(),
            config_version: 1,
        }
    }

    /// The webhook port (`PORTCULLIS_PORT`).
    pub fn webhook_port(&self) -> u16 {
        self.env["PORTCULLIS_PORT"].parse().expect("port")
    }

    /// The readiness probe port.
    pub fn readiness_port(&self) -> u16 {
        self.env["PORTCULLIS_READINESS_PROBE_PORT"]
            .parse()
            .expect("port")
    }

    /// Waits until the policy-server serves `digest` with every id in `ids`
    /// loaded (and reports ready); returns its report.
    pub fn wait_serving(&mut self, digest: &str, ids: &[&str], timeout: Duration) -> Value {
        let port = self.readiness_port();
        let server = &mut self.server;
        e2e::eventually("the policy-server to serve the ConfigMap", timeout, || {
            if !server.is_running() {
                panic!("policy-server exited:\n{}", server.log_tail(40));
            }
            let report = readiness(port).ok_or("no /readiness answer")?;
            if report["configDigest"] == json!(digest)
                && ids
                    .iter()
                    .all(|id| report["policies"][*id]["state"] == "loaded")
                && report["ready"] == true
            {
                Ok(report)
            } else {
                Err(report.to_string())
            }
        })
    }

    /// Rewrites the policies volume from `config_map`, as the kubelet does
    /// on a ConfigMap change.
    pub fn update_config(&mut self, config_map: &Value) {
        self.config_version += 1;
        kubelet_write(
            &self.config_dir,
            self.config_version,
            &volume_files(config_map, false, None),
        );
    }

    /// Replaces the process by a new one with the same environment (a new
    /// container of the same Pod spec), its log in `log_name`.
    pub fn restart(&mut self, log_name: &str) {
        self.server.kill();
        self.server = spawn(&self.env, &self.dir.join(log_name));
    }
}

fn spawn(env: &BTreeMap<String, String>, log: &Path) -> Proc {
    let bin = ps_support::binary_path().expect("policy-server binary");
    let mut cmd = Command::new(&bin);
    cmd.envs(env)
        .arg("--policies")
        .arg(&env["PORTCULLIS_POLICIES"])
        .arg("--cert-file")
        .arg(&env["PORTCULLIS_CERT_FILE"])
        .arg("--key-file")
        .arg(&env["PORTCULLIS_KEY_FILE"])
        .args(["--addr", "127.0.0.1"])
        .args(["--port", &env["PORTCULLIS_PORT"]])
        .args([
            "--readiness-probe-port",
            &env["PORTCULLIS_READINESS_PROBE_PORT"],
        ])
        .args(["--log-fmt", "json", "--log-level", "info"])
        .arg("--compiled-cache-dir")
        .arg(target_dir().join("test-compiled-cache"));
    if let Some(client_ca) = env.get("PORTCULLIS_CLIENT_CA_FILE") {
        cmd.arg("--client-ca-file").arg(client_ca);
    }
    Proc::spawn("policy-server", &mut cmd, log.to_path_buf())
}
