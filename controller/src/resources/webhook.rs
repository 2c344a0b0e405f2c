//! The webhook configuration of a policy: one webhook, named after the
//! policy id, calling `/validate/<id>` on the policy-server's Service.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations as K8sRule, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use portcullis_api::PolicyView;
use portcullis_api::names::SERVICE_PORT;

use super::NAMESPACE_NAME_LABEL;
use crate::names::{
    ANNOTATION_POLICY_NAME, ANNOTATION_POLICY_NAMESPACE, LABEL_POLICY_SERVER, MANAGED_BY, PART_OF,
    policy_server_object_name,
};

/// The namespaceSelector of a policy's webhook.
///
/// - Namespaced kinds: only their own namespace.
/// - Cluster-wide kinds: the user's selector (matchLabels *and*
///   matchExpressions) plus `kubernetes.io/metadata.name NotIn [<controller
///   namespace>]`, unless `allowInsideAdmissionControllerNamespace` is true.
pub fn namespace_selector(
    policy: &PolicyView,
    controller_namespace: &str,
) -> Option<LabelSelector> {
    let Some(scope) = &policy.scope else {
        return Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                policy.namespace.clone().unwrap_or_default(),
            )])),
            ..Default::default()
        });
    };
    if scope.allow_inside_admission_controller_namespace {
        return scope.namespace_selector.clone();
    }
    let mut selector = scope.namespace_selector.clone().unwrap_or_default();
    let mut expressions = selector.match_expressions.take().unwrap_or_default();
    expressions.push(LabelSelectorRequirement {
        key: NAMESPACE_NAME_LABEL.to_string(),
        operator: "NotIn".to_string(),
        values: Some(vec![controller_namespace.to_string()]),
    });
    selector.match_expressions = Some(expressions);
    Some(selector)
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
            scope: r.scope.clone(),
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
                LABEL_POLICY_SERVER.to_string(),
                policy.common.policy_server.clone(),
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

/// Name of the single webhook inside a policy's webhook configuration.
pub fn webhook_name(policy: &PolicyView) -> String {
    format!("{}.policies.portcullis.dev", policy.id)
}

/// The policy's webhook, as a validating one.
fn webhook(policy: &PolicyView, controller_namespace: &str, ca_bundle: &[u8]) -> ValidatingWebhook {
    let common = &policy.common;
    ValidatingWebhook {
        name: webhook_name(policy),
        admission_review_versions: vec!["v1".to_string()],
        client_config: WebhookClientConfig {
            service: Some(ServiceReference {
                namespace: controller_namespace.to_string(),
                name: policy_server_object_name(&common.policy_server),
                path: Some(format!("/validate/{}", policy.id)),
                port: Some(i32::from(SERVICE_PORT)),
            }),
            ca_bundle: Some(ByteString(ca_bundle.to_vec())),
            url: None,
        },
        failure_policy: common.failure_policy.clone(),
        match_policy: common.match_policy.clone(),
        match_conditions: common.match_conditions.clone(),
        namespace_selector: namespace_selector(policy, controller_namespace),
        object_selector: common.object_selector.clone(),
        rules: Some(rules(policy)),
        side_effects: common
            .side_effects
            .clone()
            .unwrap_or_else(|| "None".to_string()),
        timeout_seconds: Some(common.timeout_seconds),
    }
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
        webhooks: Some(vec![webhook(policy, controller_namespace, ca_bundle)]),
    }
}

/// Moves the fields of a ValidatingWebhook into a MutatingWebhook (which
/// has the same fields and a reinvocation policy).
macro_rules! mutating_from {
    ($webhook:expr, $($field:ident),+ $(,)?) => {{
        let webhook = $webhook;
        MutatingWebhook {
            $($field: webhook.$field,)+
            reinvocation_policy: None,
        }
    }};
}

/// The MutatingWebhookConfiguration of a mutating policy: the same webhook.
pub fn mutating_webhook(
    policy: &PolicyView,
    controller_namespace: &str,
    ca_bundle: &[u8],
    owner: Option<OwnerReference>,
) -> MutatingWebhookConfiguration {
    let webhook = mutating_from!(
        webhook(policy, controller_namespace, ca_bundle),
        name,
        admission_review_versions,
        client_config,
        failure_policy,
        match_policy,
        match_conditions,
        namespace_selector,
        object_selector,
        rules,
        side_effects,
        timeout_seconds,
    );
    MutatingWebhookConfiguration {
        metadata: webhook_meta(policy, owner),
        webhooks: Some(vec![webhook]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::{CAP, cap};
    use portcullis_api::{AdmissionPolicy, PolicyMode, PolicyResource};

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
        if let Some(scope) = inside.scope.as_mut() {
            scope.allow_inside_admission_controller_namespace = true;
        }
        assert_eq!(
            namespace_selector(&inside, "portcullis"),
            view.scope.and_then(|s| s.namespace_selector)
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
        // The mutating configuration carries the same webhook.
        let mutating = mutating_webhook(&view, "portcullis", b"CA", None);
        let m = &mutating.webhooks.unwrap()[0];
        assert_eq!(m.name, w.name);
        assert_eq!(m.client_config, w.client_config);
        assert_eq!(m.namespace_selector, w.namespace_selector);
    }

    #[test]
    fn namespaced_rules_are_forced_namespaced() {
        let ap: AdmissionPolicy = serde_yaml::from_str(
            r#"
apiVersion: policies.portcullis.dev/v1
kind: AdmissionPolicy
metadata: {name: p, namespace: team-a}
spec:
  module: registry://example/policy:v1
  mode: monitor
  rules:
    - {apiGroups: ["*"], apiVersions: ["*"], resources: [pods], operations: ["*"], scope: Cluster}
  mutating: false
"#,
        )
        .unwrap();
        let view = ap.view();
        let r = rules(&view);
        assert_eq!(r[0].scope.as_deref(), Some("Namespaced"));
        let sel = namespace_selector(&view, "portcullis").unwrap();
        assert_eq!(sel.match_labels.unwrap()[NAMESPACE_NAME_LABEL], "team-a");
        assert_eq!(view.common.mode, PolicyMode::Monitor);
    }
}
