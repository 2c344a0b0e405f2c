//! Property tests of the configuration parsers: any input is parsed or
//! refused with an error (never a panic), and what the controller writes
//! reads back as the same policies.

use std::collections::BTreeMap;

use portcullis_config::{
    ContextAwareResource, ExecutionMode, ModuleLocation, ModuleSourcePattern, PoliciesConfig,
    PolicyConfig, PolicyEntry, PolicyMode, SourceScheme, SourcesConfig,
};
use proptest::prelude::*;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,10}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_ .:-]{0,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn settings() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-zA-Z_]{1,8}", json_value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn policy() -> impl Strategy<Value = PolicyConfig> {
    (
        "(registry://|https://|file:///)[a-z0-9./:_-]{1,40}",
        settings(),
        prop_oneof![Just(PolicyMode::Protect), Just(PolicyMode::Monitor)],
        any::<bool>(),
        prop::collection::vec(("v1|apps/v1", "[A-Z][a-z]{0,8}"), 0..3),
        prop::option::of("[ -~]{0,30}"),
        prop::option::of(any::<u64>()),
        prop::collection::vec("[a-z*/]{1,12}", 0..3),
        prop::option::of(prop::sample::select(ExecutionMode::ALL.to_vec())),
    )
        .prop_map(
            |(
                module,
                settings,
                mode,
                mutate,
                resources,
                message,
                timeout,
                capabilities,
                execution_mode,
            )| {
                PolicyConfig {
                    module,
                    settings,
                    policy_mode: mode,
                    allowed_to_mutate: mutate,
                    context_aware_resources: resources
                        .into_iter()
                        .map(|(api_version, kind)| ContextAwareResource {
                            api_version: api_version.to_string(),
                            kind,
                        })
                        .collect(),
                    message,
                    timeout_eval_seconds: timeout,
                    host_capabilities: capabilities,
                    execution_mode,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes: a policies map or an error, never a panic.
    #[test]
    fn any_bytes_are_parsed_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = PoliciesConfig::parse_lenient(&bytes);
        let _ = PoliciesConfig::from_slice(&bytes);
        let _ = SourcesConfig::from_slice(&bytes);
    }

    /// Any JSON document: a map gives one entry per id, each the entry or
    /// the reason it is not one; anything else is refused as a whole.
    #[test]
    fn any_document_gives_one_result_per_id(document in json_value(), as_yaml in any::<bool>()) {
        let text = if as_yaml {
            serde_yaml::to_string(&document).unwrap()
        } else {
            serde_json::to_string(&document).unwrap()
        };
        let parsed = PoliciesConfig::parse_lenient(text.as_bytes());
        match &document {
            Value::Object(map) => {
                let parsed = parsed.unwrap();
                let ids: Vec<&String> = parsed.entries.keys().collect();
                let expected: Vec<&String> = map.keys().collect();
                prop_assert_eq!(ids, expected);
                for (id, entry) in &parsed.entries {
                    if id.is_empty() || id.contains('/') {
                        prop_assert!(entry.is_err(), "{id:?} is not a valid id");
                    }
                    if let Ok(PolicyEntry::Policy(policy)) = entry {
                        prop_assert!(policy.settings.is_object());
                    }
                }
            }
            Value::Null => prop_assert!(parsed.unwrap().entries.is_empty()),
            _ => prop_assert!(parsed.is_err(), "{text:?} is not a map"),
        }
    }

    /// What the controller writes (YAML or JSON) reads back as the same
    /// policies, strictly and leniently.
    #[test]
    fn written_policies_read_back_the_same(
        policies in prop::collection::btree_map("[a-z0-9-]{1,20}", policy(), 0..5),
    ) {
        let config = PoliciesConfig {
            policies: policies
                .into_iter()
                .map(|(id, p)| (id, PolicyEntry::Policy(p)))
                .collect(),
        };
        for text in [config.to_yaml().unwrap(), serde_json::to_string(&config).unwrap()] {
            prop_assert_eq!(&PoliciesConfig::from_slice(text.as_bytes()).unwrap(), &config);
            let lenient = PoliciesConfig::parse_lenient(text.as_bytes()).unwrap();
            let entries: BTreeMap<String, PolicyEntry> = lenient
                .entries
                .into_iter()
                .map(|(id, e)| (id, e.unwrap()))
                .collect();
            prop_assert_eq!(&entries, &config.policies);
        }
    }

    /// Allow-list patterns: parsed or refused, and matching never panics.
    #[test]
    fn module_source_patterns_never_panic(
        pattern in "(registry|https|http|file|ftp)?(://)?[a-zA-Z0-9*./:@%_-]{0,30}",
        host in prop::option::of("[a-z0-9.*-]{0,12}"),
        port in prop::option::of(any::<u16>()),
        path in "[a-z0-9/.%_-]{0,20}",
    ) {
        if let Ok(pattern) = ModuleSourcePattern::parse(&pattern) {
            for scheme in [SourceScheme::Registry, SourceScheme::Https, SourceScheme::Http, SourceScheme::File] {
                let _ = pattern.matches(&ModuleLocation {
                    scheme,
                    host: host.clone(),
                    port,
                    path: path.clone(),
                });
            }
        }
    }
}
