//! What runs a PolicyServer: the serving-certificate Secret, the
//! Deployment, the Service and the PodDisruptionBudget.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource,
    SecurityContext, Service, ServicePort, ServiceSpec, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use portcullis_api::PolicyServerSpec;

use super::config::sources_config;
use super::{
    BuildOptions, CERT_DIR, CLIENT_CA_DIR, CLIENT_CA_KEY, CONFIG_DIR,
    DEFAULT_MODULE_STORE_SIZE_LIMIT, DOCKER_CONFIG_DIR, DOWNLOAD_DIR, meta,
};
use crate::names::{
    POLICIES_KEY, SOURCES_KEY, policy_server_labels, policy_server_object_name,
    policy_server_selector,
};

/// The Secret with the serving certificate (`tls.crt`, `tls.key`, `ca.crt`).
pub fn cert_secret(
    ps_name: &str,
    opts: &BuildOptions,
    owner: &OwnerReference,
    cert: &crate::certs::CertAndKey,
    ca_cert_pem: &str,
    annotations: BTreeMap<String, String>,
) -> Secret {
    Secret {
        metadata: meta(opts, ps_name, owner, Some(annotations)),
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".to_string(),
                ByteString(cert.cert_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_string(),
                ByteString(cert.key_pem.clone().into_bytes()),
            ),
            (
                "ca.crt".to_string(),
                ByteString(ca_cert_pem.as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// The hardened container security context used unless the spec replaces it.
pub fn default_container_security_context() -> SecurityContext {
    SecurityContext {
        read_only_root_filesystem: Some(true),
        privileged: Some(false),
        allow_privilege_escalation: Some(false),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod security context used unless the spec replaces it.
pub fn default_pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn http_probe(path: &str, port: i32, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(port),
            scheme: Some("HTTP".to_string()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        ..Default::default()
    }
}

/// Seconds a terminating policy-server Pod keeps serving before it is sent
/// SIGTERM (its `preStop` sleep). With the policy-server's default 20 s
/// drain this fits the default 30 s termination grace period.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;

/// What the Deployment's pods get that depends on more than the
/// PolicyServer's spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodOptions {
    /// Mount a ServiceAccount token: exactly when a bound policy reads
    /// Kubernetes resources (context-aware). Otherwise a compromised
    /// policy-server has no credentials to the API server at all.
    pub service_account_token: bool,
}

/// The ServiceAccount a PolicyServer's pods run as: the spec's, or
/// `policy-server-<name>` (created by the controller).
pub fn service_account_name(ps_name: &str, server: &PolicyServerSpec) -> String {
    server
        .service_account_name
        .clone()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| policy_server_object_name(ps_name))
}

/// The policy-server Deployment.
pub fn deployment(
    ps_name: &str,
    server: &PolicyServerSpec,
    opts: &BuildOptions,
    owner: &OwnerReference,
    pod_options: &PodOptions,
) -> Deployment {
    let name = policy_server_object_name(ps_name);
    let mut pod_labels = server.labels.clone().unwrap_or_default();
    pod_labels.extend(policy_server_labels(ps_name));

    let mut env_vars = vec![
        env("PORTCULLIS_CERT_FILE", format!("{CERT_DIR}/tls.crt")),
        env("PORTCULLIS_KEY_FILE", format!("{CERT_DIR}/tls.key")),
        env(
            "PORTCULLIS_POLICIES",
            format!("{CONFIG_DIR}/{POLICIES_KEY}"),
        ),
        env("PORTCULLIS_POLICIES_DOWNLOAD_DIR", DOWNLOAD_DIR),
        env("PORTCULLIS_PORT", server.webhook_port.to_string()),
        env(
            "PORTCULLIS_READINESS_PROBE_PORT",
            server.readiness_probe_port.to_string(),
        ),
    ];
    if opts.always_accept_own_namespace {
        env_vars.push(env(
            "PORTCULLIS_ALWAYS_ACCEPT_ADMISSION_REVIEWS_ON_NAMESPACE",
            opts.namespace.clone(),
        ));
    }
    if sources_config(server).is_some() {
        env_vars.push(env(
            "PORTCULLIS_SOURCES_PATH",
            format!("{CONFIG_DIR}/{SOURCES_KEY}"),
        ));
    }
    if server.client_ca_config_map.is_some() {
        env_vars.push(env(
            "PORTCULLIS_CLIENT_CA_FILE",
            format!("{CLIENT_CA_DIR}/{CLIENT_CA_KEY}"),
        ));
    }
    if server.image_pull_secret.is_some() {
        env_vars.push(env(
            "PORTCULLIS_DOCKER_CONFIG_JSON_PATH",
            format!("{DOCKER_CONFIG_DIR}/config.json"),
        ));
    }
    env_vars.extend(server.env.clone().unwrap_or_default());

    let security = server.security_contexts.clone().unwrap_or_default();
    let resources =
        (server.limits.is_some() || server.requests.is_some()).then(|| ResourceRequirements {
            limits: server.limits.clone(),
            requests: server.requests.clone(),
            ..Default::default()
        });

    let mut mounts = vec![
        VolumeMount {
            name: "policy-store".to_string(),
            mount_path: DOWNLOAD_DIR.to_string(),
            ..Default::default()
        },
        VolumeMount {
            name: "certs".to_string(),
            mount_path: CERT_DIR.to_string(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "policies".to_string(),
            mount_path: CONFIG_DIR.to_string(),
            read_only: Some(true),
            ..Default::default()
        },
    ];
    let mut volumes = vec![
        Volume {
            name: "policy-store".to_string(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(
                    server
                        .module_store_size_limit
                        .clone()
                        .unwrap_or_else(|| Quantity(DEFAULT_MODULE_STORE_SIZE_LIMIT.to_string())),
                ),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "certs".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "policies".to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if let Some(config_map) = &server.client_ca_config_map {
        // Mutual TLS: the CAs of the API server's admission client
        // certificate (only `client-ca.crt` is mounted).
        mounts.push(VolumeMount {
            name: "client-ca".to_string(),
            mount_path: CLIENT_CA_DIR.to_string(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "client-ca".to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.clone(),
                items: Some(vec![KeyToPath {
                    key: CLIENT_CA_KEY.to_string(),
                    path: CLIENT_CA_KEY.to_string(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(secret) = &server.image_pull_secret {
        // A `kubernetes.io/dockerconfigjson` Secret in the controller
        // namespace, mounted as `config.json` for module pulls.
        mounts.push(VolumeMount {
            name: "imagepullsecret".to_string(),
            mount_path: DOCKER_CONFIG_DIR.to_string(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "imagepullsecret".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(vec![KeyToPath {
                    key: ".dockerconfigjson".to_string(),
                    path: "config.json".to_string(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    let container = Container {
        name: "policy-server".to_string(),
        image: Some(server.image.clone()),
        env: Some(env_vars),
        ports: Some(vec![
            ContainerPort {
                name: Some("webhook".to_string()),
                container_port: server.webhook_port,
                protocol: Some("TCP".to_string()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("readiness".to_string()),
                container_port: server.readiness_probe_port,
                protocol: Some("TCP".to_string()),
                ..Default::default()
            },
        ]),
        readiness_probe: Some(http_probe("/readiness", server.readiness_probe_port, 5)),
        liveness_probe: Some(http_probe("/livez", server.readiness_probe_port, 10)),
        // A terminating Pod keeps serving while the endpoints controller and
        // kube-proxy stop routing to it; only then does SIGTERM start the
        // drain. Without the pause, webhook calls routed to it in that window
        // fail (and with failurePolicy Fail, reject). A sleep action, not a
        // command: the image has no shell.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SLEEP_SECONDS,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        security_context: Some(
            security
                .container
                .unwrap_or_else(default_container_security_context),
        ),
        resources,
        volume_mounts: Some(mounts),
        ..Default::default()
    };

    let pod = PodSpec {
        containers: vec![container],
        service_account_name: Some(service_account_name(ps_name, server)),
        automount_service_account_token: Some(pod_options.service_account_token),
        security_context: Some(security.pod.unwrap_or_else(default_pod_security_context)),
        affinity: server.affinity.clone(),
        tolerations: server.tolerations.clone(),
        priority_class_name: server.priority_class_name.clone(),
        volumes: Some(volumes),
        ..Default::default()
    };

    let mut metadata = meta(opts, ps_name, owner, server.annotations.clone());
    let mut deploy_labels = server.labels.clone().unwrap_or_default();
    deploy_labels.extend(policy_server_labels(ps_name));
    metadata.labels = Some(deploy_labels);

    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(server.replicas),
            selector: LabelSelector {
                match_labels: Some(policy_server_selector(ps_name)),
                ..Default::default()
            },
            // Never below the desired number of serving replicas during an
            // upgrade: an admission webhook short of capacity times out.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::String("25%".to_string())),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: server.annotations.clone(),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Service: 443 → the webhook port.
pub fn service(
    ps_name: &str,
    server: &PolicyServerSpec,
    opts: &BuildOptions,
    owner: &OwnerReference,
) -> Service {
    Service {
        metadata: meta(opts, ps_name, owner, None),
        spec: Some(ServiceSpec {
            selector: Some(policy_server_selector(ps_name)),
            ports: Some(vec![ServicePort {
                name: Some("https".to_string()),
                port: 443,
                target_port: Some(IntOrString::Int(server.webhook_port)),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The PodDisruptionBudget, when minAvailable or maxUnavailable is set.
pub fn pod_disruption_budget(
    ps_name: &str,
    server: &PolicyServerSpec,
    opts: &BuildOptions,
    owner: &OwnerReference,
) -> Option<PodDisruptionBudget> {
    if server.min_available.is_none() && server.max_unavailable.is_none() {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: meta(opts, ps_name, owner, None),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector {
                match_labels: Some(policy_server_selector(ps_name)),
                ..Default::default()
            }),
            min_available: server.min_available.clone(),
            max_unavailable: server.max_unavailable.clone(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::server;

    #[test]
    fn deployment_is_hardened_and_probed() {
        let opts = BuildOptions {
            namespace: "portcullis".into(),
            always_accept_own_namespace: true,
        };
        let owner = OwnerReference::default();
        let d = deployment("default", &server(), &opts, &owner, &PodOptions::default());
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.unwrap();
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let ready = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(ready.path.as_deref(), Some("/readiness"));
        assert_eq!(ready.port, IntOrString::Int(8081));
        let live = c
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(live.path.as_deref(), Some("/livez"));
        let pre_stop = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.sleep.as_ref());
        assert_eq!(pre_stop.map(|s| s.seconds), Some(PRE_STOP_SLEEP_SECONDS));
        let rolling = spec
            .strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .unwrap();
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
        let env: BTreeMap<_, _> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(env["PORTCULLIS_PORT"], "8443");
        assert_eq!(env["PORTCULLIS_POLICIES"], "/config/policies.yml");
        assert_eq!(
            env["PORTCULLIS_ALWAYS_ACCEPT_ADMISSION_REVIEWS_ON_NAMESPACE"],
            "portcullis"
        );
        assert!(pod_disruption_budget("default", &server(), &opts, &owner).is_none());
        assert!(!env.contains_key("PORTCULLIS_DOCKER_CONFIG_JSON_PATH"));

        let mut with_secret = server();
        with_secret.image_pull_secret = Some("registry-creds".into());
        with_secret.max_unavailable = Some(IntOrString::Int(1));
        let d = deployment(
            "default",
            &with_secret,
            &opts,
            &owner,
            &PodOptions::default(),
        );
        let pod = d.spec.unwrap().template.spec.unwrap();
        let volume = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "imagepullsecret")
            .unwrap();
        let secret = volume.secret.unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("registry-creds"));
        assert_eq!(secret.items.unwrap()[0].path, "config.json");
        let c = &pod.containers[0];
        assert!(c.env.as_ref().unwrap().iter().any(|e| {
            e.name == "PORTCULLIS_DOCKER_CONFIG_JSON_PATH"
                && e.value.as_deref() == Some("/docker/config.json")
        }));
        let pdb = pod_disruption_budget("default", &with_secret, &opts, &owner).unwrap();
        assert_eq!(pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
    }

    #[test]
    fn least_privilege_pod() {
        let opts = BuildOptions {
            namespace: "portcullis".into(),
            always_accept_own_namespace: false,
        };
        let owner = OwnerReference::default();
        let pod = |server: &PolicyServerSpec, token: bool| {
            let options = PodOptions {
                service_account_token: token,
            };
            deployment("default", server, &opts, &owner, &options)
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
        };
        // No token unless a policy needs one; its own ServiceAccount.
        let p = pod(&server(), false);
        assert_eq!(p.automount_service_account_token, Some(false));
        assert_eq!(
            p.service_account_name.as_deref(),
            Some("policy-server-default")
        );
        assert_eq!(
            pod(&server(), true).automount_service_account_token,
            Some(true)
        );
        // The writable module store is bounded.
        let store = p
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "policy-store")
            .and_then(|v| v.empty_dir.clone())
            .unwrap();
        assert_eq!(store.size_limit, Some(Quantity("1Gi".into())));

        let mut custom = server();
        custom.service_account_name = Some("reader".into());
        custom.module_store_size_limit = Some(Quantity("3Gi".into()));
        custom.client_ca_config_map = Some("apiserver-client-ca".into());
        let p = pod(&custom, false);
        assert_eq!(p.service_account_name.as_deref(), Some("reader"));
        let volumes = p.volumes.unwrap();
        let store = volumes.iter().find(|v| v.name == "policy-store").unwrap();
        assert_eq!(
            store.empty_dir.as_ref().unwrap().size_limit,
            Some(Quantity("3Gi".into()))
        );
        // Mutual TLS: the client CA is mounted and passed to the server.
        let ca = volumes.iter().find(|v| v.name == "client-ca").unwrap();
        assert_eq!(ca.config_map.as_ref().unwrap().name, "apiserver-client-ca");
        let c = &p.containers[0];
        assert!(c.env.as_ref().unwrap().iter().any(|e| {
            e.name == "PORTCULLIS_CLIENT_CA_FILE"
                && e.value.as_deref() == Some("/client-ca/client-ca.crt")
        }));
    }
}
