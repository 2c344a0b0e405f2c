//! Pure builders of the objects the controller writes. Nothing here talks to
//! the API server, so every builder is unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations as K8sRule, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource,
    SecurityContext, Service, ServicePort, ServiceSpec, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use portcullis_config::{
    ContextAwareResource, PoliciesConfig, PolicyConfig, PolicyEntry, SourceAuthority, SourcesConfig,
};

use crate::crd::PolicyServerSpec;
use crate::names::{
    ANNOTATION_CONFIG_DIGEST, ANNOTATION_POLICY_NAME, ANNOTATION_POLICY_NAMESPACE, MANAGED_BY,
    PART_OF, POLICIES_KEY, SOURCES_KEY, policy_server_labels, policy_server_object_name,
    policy_server_selector,
};
use crate::policy::{PolicyKind, PolicyView};

/// The label every namespace carries with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Mount point of the certificate Secret in the policy-server pod.
pub const CERT_DIR: &str = "/pki";
/// Mount point of the ConfigMap in the policy-server pod.
pub const CONFIG_DIR: &str = "/config";
/// Writable module store (emptyDir).
pub const DOWNLOAD_DIR: &str = "/tmp";
/// Mount point of the `imagePullSecret` (as `config.json`).
pub const DOCKER_CONFIG_DIR: &str = "/docker";

/// Settings of the controller that shape what it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Namespace of the controller and of every namespaced object it writes.
    pub namespace: String,
    /// Set `PORTCULLIS_ALWAYS_ACCEPT_ADMISSION_REVIEWS_ON_NAMESPACE` to the
    /// controller namespace on every policy-server.
    pub always_accept_own_namespace: bool,
}

/// `policies.yml` for the policies bound to one PolicyServer.
///
/// Policies being deleted stay until they are gone: their webhook is removed
/// first (by the finalizer), so the server never gets a request for an id it
/// no longer has.
pub fn policies_config(policies: &[PolicyView], server: &PolicyServerSpec) -> PoliciesConfig {
    let policies = policies
        .iter()
        .map(|p| {
            let host_capabilities = match p.kind {
                PolicyKind::Cluster => vec!["*".to_string()],
                PolicyKind::Namespaced => server
                    .namespaced_policies_capabilities
                    .clone()
                    .unwrap_or_else(|| vec!["*".to_string()]),
            };
            let entry = PolicyConfig {
                module: p.module.clone(),
                settings: match &p.settings {
                    Some(v @ serde_json::Value::Object(_)) => v.clone(),
                    _ => serde_json::Value::Object(Default::default()),
                },
                policy_mode: p.mode.into(),
                allowed_to_mutate: p.mutating,
                context_aware_resources: p
                    .context_aware_resources
                    .iter()
                    .map(|r| ContextAwareResource {
                        api_version: r.api_version.clone(),
                        kind: r.kind.clone(),
                    })
                    .collect(),
                message: p.message.clone(),
                timeout_eval_seconds: p.timeout_eval_seconds.and_then(|t| u64::try_from(t).ok()),
                host_capabilities,
                // Kubewarden's policy CRDs have no execution mode: the
                // server takes it from the module's metadata.
                execution_mode: None,
            };
            (p.id.clone(), PolicyEntry::Policy(entry))
        })
        .collect();
    PoliciesConfig { policies }
}

/// `sources.yml` of a PolicyServer, if it sets any source option.
pub fn sources_config(server: &PolicyServerSpec) -> Option<SourcesConfig> {
    if server.insecure_sources.is_none() && server.source_authorities.is_none() {
        return None;
    }
    Some(SourcesConfig {
        insecure_sources: server.insecure_sources.clone().unwrap_or_default(),
        source_authorities: server
            .source_authorities
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(host, pems)| {
                let certs = pems
                    .into_iter()
                    .map(|data| SourceAuthority::Data { data })
                    .collect();
                (host, certs)
            })
            .collect(),
    })
}

fn meta(
    name: &str,
    opts: &BuildOptions,
    ps_name: &str,
    owner: &OwnerReference,
    annotations: Option<BTreeMap<String, String>>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(opts.namespace.clone()),
        labels: Some(policy_server_labels(ps_name)),
        annotations,
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// The ConfigMap with `policies.yml` (and `sources.yml` when needed).
pub fn config_map(
    ps_name: &str,
    server: &PolicyServerSpec,
    policies: &[PolicyView],
    opts: &BuildOptions,
    owner: &OwnerReference,
) -> Result<ConfigMap, portcullis_config::ConfigError> {
    let policies_yaml = policies_config(policies, server).to_yaml()?;
    let mut data = BTreeMap::from([(POLICIES_KEY.to_string(), policies_yaml.clone())]);
    if let Some(sources) = sources_config(server) {
        let yaml =
            serde_yaml::to_string(&sources).map_err(|e| portcullis_config::ConfigError::Parse {
                what: "sources file",
                reason: e.to_string(),
            })?;
        data.insert(SOURCES_KEY.to_string(), yaml);
    }
    let annotations = BTreeMap::from([(
        ANNOTATION_CONFIG_DIGEST.to_string(),
        portcullis_config::content_digest(policies_yaml.as_bytes()),
    )]);
    Ok(ConfigMap {
        metadata: meta(
            &policy_server_object_name(ps_name),
            opts,
            ps_name,
            owner,
            Some(annotations),
        ),
        data: Some(data),
        ..Default::default()
    })
}

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
        metadata: meta(
            &policy_server_object_name(ps_name),
            opts,
            ps_name,
            owner,
            Some(annotations),
        ),
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

/// The policy-server Deployment.
pub fn deployment(
    ps_name: &str,
    server: &PolicyServerSpec,
    opts: &BuildOptions,
    owner: &OwnerReference,
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
            empty_dir: Some(EmptyDirVolumeSource::default()),
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
        service_account_name: server.service_account_name.clone(),
        security_context: Some(security.pod.unwrap_or_else(default_pod_security_context)),
        affinity: server.affinity.clone(),
        tolerations: server.tolerations.clone(),
        priority_class_name: server.priority_class_name.clone(),
        volumes: Some(volumes),
        ..Default::default()
    };

    let mut metadata = meta(&name, opts, ps_name, owner, server.annotations.clone());
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
        metadata: meta(
            &policy_server_object_name(ps_name),
            opts,
            ps_name,
            owner,
            None,
        ),
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
        metadata: meta(
            &policy_server_object_name(ps_name),
            opts,
            ps_name,
            owner,
            None,
        ),
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

/// The namespaceSelector of a policy's webhook.
///
/// - AdmissionPolicy: only its own namespace.
/// - ClusterAdmissionPolicy: the user's selector (matchLabels *and*
///   matchExpressions) plus `kubernetes.io/metadata.name NotIn [<controller
///   namespace>]`, unless `allowInsideAdmissionControllerNamespace` is true.
pub fn namespace_selector(
    policy: &PolicyView,
    controller_namespace: &str,
) -> Option<LabelSelector> {
    match policy.kind {
        PolicyKind::Namespaced => Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                policy.namespace.clone().unwrap_or_default(),
            )])),
            ..Default::default()
        }),
        PolicyKind::Cluster if policy.allow_inside_controller_namespace => {
            policy.namespace_selector.clone()
        }
        PolicyKind::Cluster => {
            let mut selector = policy.namespace_selector.clone().unwrap_or_default();
            let mut expressions = selector.match_expressions.take().unwrap_or_default();
            expressions.push(LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.to_string(),
                operator: "NotIn".to_string(),
                values: Some(vec![controller_namespace.to_string()]),
            });
            selector.match_expressions = Some(expressions);
            Some(selector)
        }
    }
}

fn rules(policy: &PolicyView) -> Vec<K8sRule> {
    policy
        .rules
        .iter()
        .map(|r| K8sRule {
            api_groups: r.api_groups.clone(),
            api_versions: Some(r.api_versions.clone()),
            operations: Some(r.operations.clone()),
            resources: Some(r.resources.clone()),
            scope: match policy.kind {
                PolicyKind::Namespaced => Some("Namespaced".to_string()),
                PolicyKind::Cluster => r.scope.clone(),
            },
        })
        .collect()
}

fn webhook_meta(policy: &PolicyView, owner: Option<OwnerReference>) -> ObjectMeta {
    ObjectMeta {
        name: Some(policy.id.clone()),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/part-of".to_string(), PART_OF.to_string()),
            (
                "app.kubernetes.io/managed-by".to_string(),
                MANAGED_BY.to_string(),
            ),
            (
                crate::names::LABEL_POLICY_SERVER.to_string(),
                policy.policy_server.clone(),
            ),
        ])),
        annotations: Some(BTreeMap::from([
            (ANNOTATION_POLICY_NAME.to_string(), policy.name.clone()),
            (
                ANNOTATION_POLICY_NAMESPACE.to_string(),
                policy.namespace.clone().unwrap_or_default(),
            ),
        ])),
        owner_references: owner.map(|o| vec![o]),
        ..Default::default()
    }
}

fn client_config(
    policy: &PolicyView,
    controller_namespace: &str,
    ca_bundle: &[u8],
) -> WebhookClientConfig {
    WebhookClientConfig {
        service: Some(ServiceReference {
            namespace: controller_namespace.to_string(),
            name: policy_server_object_name(&policy.policy_server),
            path: Some(format!("/validate/{}", policy.id)),
            port: Some(443),
        }),
        ca_bundle: Some(ByteString(ca_bundle.to_vec())),
        url: None,
    }
}

/// Name of the single webhook inside a policy's webhook configuration.
pub fn webhook_name(policy: &PolicyView) -> String {
    format!("{}.policies.portcullis.dev", policy.id)
}

/// The ValidatingWebhookConfiguration of a non-mutating policy. `owner` is
/// set for cluster-wide policies only (a cluster-scoped object cannot be
/// owned by a namespaced one).
pub fn validating_webhook(
    policy: &PolicyView,
    controller_namespace: &str,
    ca_bundle: &[u8],
    owner: Option<OwnerReference>,
) -> ValidatingWebhookConfiguration {
    ValidatingWebhookConfiguration {
        metadata: webhook_meta(policy, owner),
        webhooks: Some(vec![ValidatingWebhook {
            name: webhook_name(policy),
            admission_review_versions: vec!["v1".to_string()],
            client_config: client_config(policy, controller_namespace, ca_bundle),
            failure_policy: policy.failure_policy.clone(),
            match_policy: policy.match_policy.clone(),
            match_conditions: policy.match_conditions.clone(),
            namespace_selector: namespace_selector(policy, controller_namespace),
            object_selector: policy.object_selector.clone(),
            rules: Some(rules(policy)),
            side_effects: policy
                .side_effects
                .clone()
                .unwrap_or_else(|| "None".to_string()),
            timeout_seconds: Some(policy.timeout_seconds),
        }]),
    }
}

/// The MutatingWebhookConfiguration of a mutating policy.
pub fn mutating_webhook(
    policy: &PolicyView,
    controller_namespace: &str,
    ca_bundle: &[u8],
    owner: Option<OwnerReference>,
) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: webhook_meta(policy, owner),
        webhooks: Some(vec![MutatingWebhook {
            name: webhook_name(policy),
            admission_review_versions: vec!["v1".to_string()],
            client_config: client_config(policy, controller_namespace, ca_bundle),
            failure_policy: policy.failure_policy.clone(),
            match_policy: policy.match_policy.clone(),
            match_conditions: policy.match_conditions.clone(),
            namespace_selector: namespace_selector(policy, controller_namespace),
            object_selector: policy.object_selector.clone(),
            rules: Some(rules(policy)),
            side_effects: policy
                .side_effects
                .clone()
                .unwrap_or_else(|| "None".to_string()),
            timeout_seconds: Some(policy.timeout_seconds),
            reinvocation_policy: None,
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ClusterAdmissionPolicy, PolicyMode, RuleWithOperations};
    use crate::policy::Policy;

    fn cap(yaml: &str) -> PolicyView {
        let p: ClusterAdmissionPolicy = serde_yaml::from_str(yaml).unwrap();
        p.view()
    }

    const CAP: &str = r#"
apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicy
metadata: {name: privileged}
spec:
  module: registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2
  mode: monitor
  settings: {a: 1}
  timeoutEvalSeconds: 3
  rules:
    - {apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}
  mutating: false
  namespaceSelector:
    matchLabels: {team: a}
    matchExpressions: [{key: env, operator: In, values: [prod]}]
"#;

    fn server() -> PolicyServerSpec {
        serde_yaml::from_str("image: ghcr.io/portcullis/policy-server:latest\nreplicas: 2\n")
            .unwrap()
    }

    #[test]
    fn policies_file_uses_config_types() {
        let view = cap(CAP);
        let cfg = policies_config(std::slice::from_ref(&view), &server());
        let PolicyEntry::Policy(p) = &cfg.policies["clusterwide-privileged"] else {
            panic!("{cfg:?}");
        };
        assert_eq!(p.policy_mode, portcullis_config::PolicyMode::Monitor);
        assert_eq!(p.timeout_eval_seconds, Some(3));
        assert_eq!(p.settings, serde_json::json!({"a": 1}));
        assert_eq!(p.host_capabilities, vec!["*".to_string()]);
        let yaml = cfg.to_yaml().unwrap();
        let back = PoliciesConfig::from_slice(yaml.as_bytes()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn cluster_selector_keeps_labels_and_expressions() {
        let view = cap(CAP);
        let sel = namespace_selector(&view, "portcullis").unwrap();
        assert_eq!(sel.match_labels.unwrap()["team"], "a");
        let exprs = sel.match_expressions.unwrap();
        assert_eq!(exprs.len(), 2);
        assert_eq!(exprs[1].operator, "NotIn");
        assert_eq!(
            exprs[1].values.as_deref(),
            Some(&["portcullis".to_string()][..])
        );

        let mut inside = view.clone();
        inside.allow_inside_controller_namespace = true;
        assert_eq!(
            namespace_selector(&inside, "portcullis"),
            view.namespace_selector
        );
    }

    #[test]
    fn webhook_fields() {
        let view = cap(CAP);
        let wh = validating_webhook(&view, "portcullis", b"CA", None);
        assert_eq!(wh.metadata.name.as_deref(), Some("clusterwide-privileged"));
        let w = &wh.webhooks.unwrap()[0];
        let svc = w.client_config.service.as_ref().unwrap();
        assert_eq!(svc.name, "policy-server-default");
        assert_eq!(
            svc.path.as_deref(),
            Some("/validate/clusterwide-privileged")
        );
        assert_eq!(w.side_effects, "None");
        assert_eq!(w.timeout_seconds, Some(10));
        assert_eq!(
            w.client_config.ca_bundle.as_ref().unwrap().0,
            b"CA".to_vec()
        );
    }

    #[test]
    fn namespaced_rules_are_forced_namespaced() {
        let mut view = cap(CAP);
        view.kind = PolicyKind::Namespaced;
        view.namespace = Some("team-a".into());
        view.rules = vec![RuleWithOperations {
            operations: vec!["*".into()],
            api_versions: vec!["*".into()],
            resources: vec!["*".into()],
            api_groups: None,
            scope: Some("Cluster".into()),
        }];
        let r = rules(&view);
        assert_eq!(r[0].scope.as_deref(), Some("Namespaced"));
        let sel = namespace_selector(&view, "portcullis").unwrap();
        assert_eq!(sel.match_labels.unwrap()[NAMESPACE_NAME_LABEL], "team-a");
        assert_eq!(view.mode, PolicyMode::Monitor);
    }

    #[test]
    fn deployment_is_hardened_and_probed() {
        let opts = BuildOptions {
            namespace: "portcullis".into(),
            always_accept_own_namespace: true,
        };
        let owner = OwnerReference::default();
        let d = deployment("default", &server(), &opts, &owner);
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
        let d = deployment("default", &with_secret, &opts, &owner);
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
}
