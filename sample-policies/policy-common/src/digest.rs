//! image-digest: pins every container image of a Pod to the digest its tag
//! has in the registry, so that what runs is what was admitted even if the
//! tag moves. An image whose digest cannot be looked up is rejected.
//!
//! The policy asks the host for each image's manifest digest (an OCI
//! registry look-up, cached by the host). It is mutating: `image: app:1.0`
//! becomes `image: app:1.0@sha256:...`.

use serde::Deserialize;
use serde_json::Value;

/// The status code of a rejection: an image cannot be resolved.
pub const REJECTION_CODE: u16 = 400;

/// The settings: none (`{}`); unknown keys are rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {}

const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// Whether `image` already names a digest.
pub fn is_pinned(image: &str) -> bool {
    image.contains("@sha256:")
}

/// Pins every image of `pod` that is not pinned yet, with `lookup` giving
/// the digest of an image. Returns whether the Pod changed, or the
/// rejection message when an image cannot be resolved.
pub fn pin_images(
    pod: &mut Value,
    mut lookup: impl FnMut(&str) -> Result<String, String>,
) -> Result<bool, String> {
    let mut changed = false;
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(false);
    };
    for list in CONTAINER_LISTS {
        let Some(containers) = spec.get_mut(*list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers {
            let Some(image) = container.get("image").and_then(Value::as_str) else {
                continue;
            };
            if is_pinned(image) {
                continue;
            }
            let digest = lookup(image)
                .map_err(|e| format!("cannot resolve the digest of image {image}: {e}"))?;
            let pinned = format!("{image}@{digest}");
            container["image"] = Value::String(pinned);
            changed = true;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pins_unpinned_images() {
        let mut pod = json!({"spec": {
            "containers": [{"name": "a", "image": "reg/app:1"}, {"name": "b", "image": "reg/db@sha256:00"}],
            "initContainers": [{"name": "i", "image": "reg/init:2"}]
        }});
        let mut asked = Vec::new();
        let changed = pin_images(&mut pod, |image| {
            asked.push(image.to_string());
            Ok(format!("sha256:{}", image.len()))
        })
        .unwrap();
        assert!(changed);
        assert_eq!(asked, ["reg/app:1", "reg/init:2"]);
        assert_eq!(pod["spec"]["containers"][0]["image"], "reg/app:1@sha256:9");
        assert_eq!(pod["spec"]["containers"][1]["image"], "reg/db@sha256:00");
        assert_eq!(
            pod["spec"]["initContainers"][0]["image"],
            "reg/init:2@sha256:10"
        );

        let err = pin_images(
            &mut json!({"spec": {"containers": [{"image": "x:1"}]}}),
            |_| Err("manifest unknown".into()),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "cannot resolve the digest of image x:1: manifest unknown"
        );
        assert!(!pin_images(&mut json!({"kind": "Pod"}), |_| unreachable!()).unwrap());
    }
}
