//! requester-can-i: a request is admitted only if the user who sends it may
//! perform a configured action, as the API server's authorizer (RBAC) says.
//!
//! The policy asks the host for a SubjectAccessReview (`can_i`) of the
//! requesting user and groups, in the request's namespace. This is how a
//! policy can tie a sensitive operation to an RBAC grant, as Pod Security
//! Policies did with their `use` verb: for example, only users allowed to
//! `use` `privileged-workloads.policies.example.com` may create Pods.

use serde::Deserialize;

/// The status code of a rejection: the user is not allowed.
pub const REJECTION_CODE: u16 = 403;

/// The action the requesting user must be allowed to perform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The verb, such as `use` or `create`.
    pub verb: String,
    /// The API group of the resource; empty for the core group.
    #[serde(default)]
    pub group: String,
    /// The plural resource name.
    pub resource: String,
}

impl Settings {
    /// Checks that the action is complete.
    pub fn validate(&self) -> Result<(), String> {
        if self.verb.trim().is_empty() || self.resource.trim().is_empty() {
            return Err("settings: verb and resource must not be empty".to_string());
        }
        Ok(())
    }

    /// `use privileged-workloads.policies.example.com`.
    pub fn action(&self) -> String {
        if self.group.is_empty() {
            format!("{} {}", self.verb, self.resource)
        } else {
            format!("{} {}.{}", self.verb, self.resource, self.group)
        }
    }

    /// The rejection message for `user` in `namespace`.
    pub fn denied(&self, user: &str, namespace: Option<&str>, reason: Option<&str>) -> String {
        let scope = match namespace {
            Some(ns) if !ns.is_empty() => format!(" in namespace {ns}"),
            _ => String::new(),
        };
        let reason = match reason {
            Some(r) if !r.is_empty() => format!(" ({r})"),
            _ => String::new(),
        };
        format!(
            "user {user} is not allowed to {}{scope}{reason}",
            self.action()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let s: Settings = serde_json::from_str(
            r#"{"verb":"use","group":"policies.example.com","resource":"privileged-workloads"}"#,
        )
        .unwrap();
        s.validate().unwrap();
        assert_eq!(
            s.denied("bob", Some("team-a"), None),
            "user bob is not allowed to use privileged-workloads.policies.example.com in namespace team-a"
        );
        let core: Settings =
            serde_json::from_str(r#"{"verb":"delete","resource":"nodes"}"#).unwrap();
        assert_eq!(
            core.denied("bob", None, Some("no RBAC rule")),
            "user bob is not allowed to delete nodes (no RBAC rule)"
        );
        assert!(
            serde_json::from_str::<Settings>(r#"{"verb":"x","resource":"y","extra":1}"#).is_err()
        );
        let empty: Settings = serde_json::from_str(r#"{"verb":" ","resource":"y"}"#).unwrap();
        assert!(empty.validate().is_err());
    }
}
