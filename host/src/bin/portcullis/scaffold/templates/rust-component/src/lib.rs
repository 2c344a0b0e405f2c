//! {{name}}: a component policy on the `portcullis:policy` WIT contract.
//! Rejects objects that carry a label listed in `denied_labels`.

// `generate_all`: the world uses the types of the portcullis:policy package.
wit_bindgen::generate!({ path: "wit", world: "policy", generate_all });

use serde::Deserialize;
use serde_json::Value;

/// The settings; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    /// Labels an object may not carry.
    denied_labels: Vec<String>,
}

fn parse_settings(text: &str) -> Result<Settings, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid settings: {e}"))
}

struct Policy;

export!(Policy);

impl Guest for Policy {
    fn validate_settings(settings: String) -> Result<SettingsValidationResponse, String> {
        Ok(match parse_settings(&settings) {
            Ok(_) => SettingsValidationResponse { valid: true, message: None },
            Err(message) => SettingsValidationResponse { valid: false, message: Some(message) },
        })
    }

    fn validate(request: ValidationRequest) -> Result<ValidationResponse, String> {
        let settings = parse_settings(&request.settings)?;
        let object: Value = match &request.request.object {
            Some(text) => serde_json::from_str(text).map_err(|e| format!("object: {e}"))?,
            None => Value::Null,
        };
        let labels = &object["metadata"]["labels"];
        let denied: Vec<&str> = settings
            .denied_labels
            .iter()
            .filter(|label| labels.get(label.as_str()).is_some())
            .map(String::as_str)
            .collect();
        Ok(ValidationResponse {
            accepted: denied.is_empty(),
            message: (!denied.is_empty())
                .then(|| format!("these labels are not allowed: {}", denied.join(", "))),
            code: None,
            mutated_object: None,
            warnings: Vec::new(),
            audit_annotations: Vec::new(),
        })
    }
}
