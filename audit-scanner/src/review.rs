//! The synthetic `admission.k8s.io/v1` AdmissionReview the scanner sends
//! for an existing object: a CREATE of the object as it is stored, as if it
//! were being admitted now. Like Kubewarden's scanner it carries no
//! `userInfo` (who created the object is not known) and no `oldObject`; the
//! request uid is the object's uid, so the policy-server's logs name it.
//! Unlike Kubewarden's, `resource.resource` is the resource (`pods`), not
//! the kind.

use kube::discovery::ApiResource;
use serde::Serialize;
use serde_json::{Value, json};

/// What the scanner knows of an object to audit.
#[derive(Debug, Clone)]
pub struct ObjectRef<'a> {
    /// The resource type it was listed as.
    pub api_resource: &'a ApiResource,
    /// metadata.name.
    pub name: &'a str,
    /// metadata.namespace.
    pub namespace: Option<&'a str>,
    /// metadata.uid.
    pub uid: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Review<'a> {
    api_version: &'static str,
    kind: &'static str,
    request: Request<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    uid: &'a str,
    kind: Gvk<'a>,
    resource: Gvr<'a>,
    request_kind: Gvk<'a>,
    request_resource: Gvr<'a>,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    operation: &'static str,
    user_info: Value,
    object: &'a Value,
    old_object: Option<()>,
    dry_run: bool,
    options: Value,
}

#[derive(Serialize)]
struct Gvk<'a> {
    group: &'a str,
    version: &'a str,
    kind: &'a str,
}

#[derive(Serialize)]
struct Gvr<'a> {
    group: &'a str,
    version: &'a str,
    resource: &'a str,
}

fn gvk<'a>(ar: &'a ApiResource) -> Gvk<'a> {
    Gvk {
        group: &ar.group,
        version: &ar.version,
        kind: &ar.kind,
    }
}

fn gvr<'a>(ar: &'a ApiResource) -> Gvr<'a> {
    Gvr {
        group: &ar.group,
        version: &ar.version,
        resource: &ar.plural,
    }
}

/// The AdmissionReview body for `object`, serialised once and sent to every
/// policy that audits it.
pub fn review_body(target: &ObjectRef<'_>, object: &Value) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&Review {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        request: Request {
            uid: target.uid,
            kind: gvk(target.api_resource),
            resource: gvr(target.api_resource),
            request_kind: gvk(target.api_resource),
            request_resource: gvr(target.api_resource),
            name: target.name,
            namespace: target.namespace,
            operation: "CREATE",
            user_info: json!({}),
            object,
            old_object: None,
            dry_run: false,
            options: json!({"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}),
        },
    })
}

/// The `request` variable of matchConditions: the review's request without
/// the object (which is the `object` variable).
pub fn cel_request(target: &ObjectRef<'_>) -> Value {
    let ar = target.api_resource;
    let kind = json!({"group": ar.group, "version": ar.version, "kind": ar.kind});
    let resource = json!({"group": ar.group, "version": ar.version, "resource": ar.plural});
    json!({
        "uid": target.uid,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "subResource": "",
        "name": target.name,
        "namespace": target.namespace.unwrap_or_default(),
        "operation": "CREATE",
        "userInfo": {"username": "", "groups": []},
        "dryRun": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_is_a_create_of_the_object() {
        let ar = ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
        };
        let object =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
        let target = ObjectRef {
            api_resource: &ar,
            name: "d",
            namespace: Some("ns"),
            uid: "u-1",
        };
        let review: Value =
            serde_json::from_slice(&review_body(&target, &object).unwrap()).unwrap();
        let request = &review["request"];
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(request["operation"], "CREATE");
        assert_eq!(request["uid"], "u-1");
        assert_eq!(request["resource"]["resource"], "deployments");
        assert_eq!(request["kind"]["kind"], "Deployment");
        assert_eq!(request["requestKind"], request["kind"]);
        assert_eq!(request["namespace"], "ns");
        assert_eq!(request["object"], object);
        assert!(request["oldObject"].is_null());
        let cel = cel_request(&target);
        assert_eq!(cel["operation"], "CREATE");
        assert!(cel.get("object").is_none());
    }
}
