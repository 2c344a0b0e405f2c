//! Building a [`PolicySet`] from a parsed policies file.
//!
//! Every policy is loaded independently: a module that cannot be fetched or
//! compiled, or settings the policy rejects, fail that policy only. On reload
//! the previous set is consulted so that a policy whose entry and module bytes
//! are unchanged is kept as is, and compiled modules are reused by digest.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use portcullis_adapters::{LoadedModule, PolicyEngine, Settings};
use portcullis_config::{
    LenientPolicies, PolicyConfig, PolicyEntry, PolicyGroupConfig, PolicyGroupMember, PolicyMode,
};
use tracing::{info, warn};

use super::{
    FailedPolicy, GroupExpression, LoadedGroup, LoadedPolicy, PolicySet, PolicyState, member_id,
};
use crate::admission::cap_text;
use crate::admission::limits::MAX_MESSAGE_BYTES;
use crate::capabilities::{HostServices, ResourceType};
use crate::module_source::{FetchFailure, ModuleBytes, ModuleSource};

/// Loads policy sets: fetch → compile (or reuse) → validate settings.
#[derive(Clone)]
pub struct PolicyLoader {
    engine: PolicyEngine,
    source: ModuleSource,
    default_timeout: Duration,
    services: Arc<HostServices>,
}

impl PolicyLoader {
    /// A loader using `engine` to compile, `source` to fetch modules, and
    /// `default_timeout` for policies without `timeoutEvalSeconds`, and
    /// `services` to answer the policies' host capabilities.
    pub fn new(
        engine: PolicyEngine,
        source: ModuleSource,
        default_timeout: Duration,
        services: Arc<HostServices>,
    ) -> Self {
        Self {
            engine,
            source,
            default_timeout,
            services,
        }
    }

    /// Loads every entry of `parsed`. Never fails as a whole: broken policies
    /// become [`PolicyState::Failed`]. `previous` is the set being replaced,
    /// whose unchanged policies and compiled modules are reused.
    pub async fn load(
        &self,
        parsed: LenientPolicies,
        previous: Option<&PolicySet>,
        generation: u64,
    ) -> PolicySet {
        let mut states = BTreeMap::new();
        let mut policies = Vec::new();
        let mut groups = Vec::new();
        for (id, entry) in parsed.entries {
            match entry {
                Err(reason) => {
                    let failed = failed(&id, format!("invalid policy entry: {reason}"), None);
                    states.insert(id, failed);
                }
                Ok(PolicyEntry::Group(group)) => {
                    // Members load like policies (fetch, compile, validate
                    // settings), under their `<group>/<member>` ids.
                    for (name, member) in &group.policies {
                        policies.push((member_id(&id, name), member_policy(member)));
                    }
                    groups.push((id, group));
                }
                Ok(PolicyEntry::Policy(config)) => policies.push((id, config)),
            }
        }

        let fetched = self.fetch_modules(&policies).await;
        let modules = self.compile_modules(&fetched, previous).await;

        let mut validations = Vec::new();
        for (id, config) in policies {
            let module_bytes = match &fetched[config.module.as_str()] {
                Ok(module_bytes) => module_bytes,
                Err(failure) => {
                    // What the policy's owner sees (readiness report, status,
                    // rejections); the details went to the log.
                    let reason = format!("cannot fetch module: {}", failure.public);
                    let mut state = failed_policy(&id, reason, Some(&config));
                    // Registries and web servers come back; bad settings do not.
                    state.retryable = true;
                    states.insert(id, PolicyState::Failed(Arc::new(state)));
                    continue;
                }
            };
            let digest = module_bytes.digest.clone();
            if let Some(unchanged) =
                previous.and_then(|p| unchanged_policy(p, &id, &config, &digest))
            {
                states.insert(id, PolicyState::Loaded(unchanged));
                continue;
            }
            // The execution mode is per policy: modules are shared by digest.
            let module = match &modules[&digest] {
                Ok(module) => match config.execution_mode {
                    None => Ok(module.clone()),
                    Some(mode) => module.with_execution_mode(mode).map_err(|e| {
                        format!(
                            "cannot run module {} in execution mode {mode}: {e}",
                            config.module
                        )
                    }),
                },
                Err(reason) => Err(format!("cannot load module {}: {reason}", config.module)),
            };
            let module = match module {
                Ok(module) => module,
                Err(reason) => {
                    let mut state = failed_policy(&id, reason, Some(&config));
                    state.module_digest = Some(digest);
                    states.insert(id, PolicyState::Failed(Arc::new(state)));
                    continue;
                }
            };
            let resources = config
                .context_aware_resources
                .iter()
                .map(|r| ResourceType::new(&r.api_version, &r.kind));
            let capabilities =
                match self
                    .services
                    .policy_capabilities(&id, &config.host_capabilities, resources)
                {
                    Ok(capabilities) => capabilities,
                    Err(e) => {
                        let mut state = failed_policy(&id, e.to_string(), Some(&config));
                        state.module_digest = Some(digest);
                        states.insert(id, PolicyState::Failed(Arc::new(state)));
                        continue;
                    }
                };
            let policy = LoadedPolicy {
                id: id.clone(),
                timeout: config
                    .timeout_eval_seconds
                    .map(Duration::from_secs)
                    .unwrap_or(self.default_timeout),
                capabilities: Arc::new(capabilities),
                settings: Settings::new(config.settings.clone()),
                config,
                module,
                module_digest: digest,
            };
            validations.push(validate_settings(policy));
        }
        for (id, state) in join_all(validations).await {
            states.insert(id, state);
        }
        for (id, group) in groups {
            let state = assemble_group(&id, group, &mut states);
            states.insert(id, state);
        }

        for state in states.values() {
            match state {
                PolicyState::Loaded(p) => {
                    info!(policy_id = %p.id, module = %p.config.module, digest = %p.module_digest, mode = %p.config.policy_mode, "policy loaded")
                }
                PolicyState::Group(g) => {
                    info!(policy_id = %g.id, expression = %g.config.expression, members = ?g.members.keys().collect::<Vec<_>>(), mode = %g.config.policy_mode, "policy group loaded")
                }
                PolicyState::Failed(f) => {
                    warn!(policy_id = %f.id, reason = %f.reason, "policy failed to load")
                }
            }
        }
        PolicySet {
            policies: states,
            config_digest: parsed.digest,
            generation,
        }
    }

    async fn fetch_modules(
        &self,
        policies: &[(String, PolicyConfig)],
    ) -> HashMap<String, Result<ModuleBytes, FetchFailure>> {
        let uris: BTreeSet<&str> = policies.iter().map(|(_, c)| c.module.as_str()).collect();
        let fetched: HashMap<String, Result<ModuleBytes, FetchFailure>> = join_all(
            uris.into_iter()
                .map(|uri| async move { (uri.to_string(), self.source.fetch(uri).await) }),
        )
        .await
        .into_iter()
        .collect();
        for (uri, result) in &fetched {
            if let Err(failure) = result {
                let users: Vec<&str> = policies
                    .iter()
                    .filter(|(_, c)| c.module == *uri)
                    .map(|(id, _)| id.as_str())
                    .collect();
                warn!(module = %uri, policies = ?users, error = %failure.detail, "cannot fetch policy module");
            }
        }
        fetched
    }

    /// Compiles each distinct module once, reusing the previous set's modules.
    async fn compile_modules(
        &self,
        fetched: &HashMap<String, Result<ModuleBytes, FetchFailure>>,
        previous: Option<&PolicySet>,
    ) -> HashMap<String, Result<LoadedModule, String>> {
        let mut modules: HashMap<String, Result<LoadedModule, String>> = HashMap::new();
        if let Some(previous) = previous {
            for state in previous.policies.values() {
                match state {
                    PolicyState::Loaded(p) => {
                        modules.insert(p.module_digest.clone(), Ok(p.module.clone()));
                    }
                    PolicyState::Group(g) => {
                        for p in g.members.values() {
                            modules.insert(p.module_digest.clone(), Ok(p.module.clone()));
                        }
                    }
                    PolicyState::Failed(_) => {}
                }
            }
        }
        let mut to_compile: HashMap<&str, Arc<[u8]>> = HashMap::new();
        for module in fetched.values().flatten() {
            if !modules.contains_key(&module.digest) {
                to_compile.insert(&module.digest, Arc::clone(&module.bytes));
            }
        }
        let compiled = join_all(to_compile.into_iter().map(|(digest, bytes)| {
            let engine = self.engine.clone();
            async move {
                let result = tokio::task::spawn_blocking(move || engine.load(&bytes))
                    .await
                    .map_err(|e| format!("compilation task failed: {e}"))
                    .and_then(|r| r.map_err(|e| e.to_string()));
                (digest.to_string(), result)
            }
        }))
        .await;
        if !compiled.is_empty() {
            crate::memory::release_freed_memory();
        }
        modules.extend(compiled);
        modules
    }
}

/// The previous set's policy when neither its entry nor its module changed.
fn unchanged_policy(
    previous: &PolicySet,
    id: &str,
    config: &PolicyConfig,
    digest: &str,
) -> Option<Arc<LoadedPolicy>> {
    let policy = match id.split_once('/') {
        Some((group, member)) => match previous.get(group)? {
            PolicyState::Group(g) => g.members.get(member)?,
            _ => return None,
        },
        None => match previous.get(id)? {
            PolicyState::Loaded(p) => p,
            _ => return None,
        },
    };
    (policy.config == *config && policy.module_digest == digest).then(|| Arc::clone(policy))
}

/// A group member as the policy it is loaded as: always `protect`, never
/// mutating (a member's mutation counts as `false`), no message of its own.
fn member_policy(member: &PolicyGroupMember) -> PolicyConfig {
    PolicyConfig {
        module: member.module.clone(),
        settings: member.settings.clone(),
        policy_mode: PolicyMode::Protect,
        allowed_to_mutate: false,
        context_aware_resources: member.context_aware_resources.clone(),
        message: None,
        timeout_eval_seconds: member.timeout_eval_seconds,
        host_capabilities: member.host_capabilities.clone(),
        execution_mode: member.execution_mode,
    }
}

/// Takes the group's members out of `states` and builds the group. One
/// member that failed fails the group closed; nothing else is affected.
fn assemble_group(
    id: &str,
    config: PolicyGroupConfig,
    states: &mut BTreeMap<String, PolicyState>,
) -> PolicyState {
    let mut members = BTreeMap::new();
    let mut failures = Vec::new();
    let mut retryable = false;
    for name in config.policies.keys() {
        match states.remove(&member_id(id, name)) {
            Some(PolicyState::Loaded(policy)) => {
                members.insert(name.clone(), policy);
            }
            Some(PolicyState::Failed(failed)) => {
                retryable |= failed.retryable;
                failures.push(format!("member {name}: {}", failed.reason));
            }
            Some(PolicyState::Group(_)) | None => {
                failures.push(format!("member {name}: not loaded"));
            }
        }
    }
    let fail = |reason: String, retryable: bool| {
        PolicyState::Failed(Arc::new(FailedPolicy {
            id: id.to_string(),
            reason: cap_text(reason, MAX_MESSAGE_BYTES, "message"),
            mode: Some(config.policy_mode),
            module: None,
            module_digest: None,
            retryable,
        }))
    };
    if config.policies.is_empty() {
        return fail("a policy group needs at least one member".into(), false);
    }
    if !failures.is_empty() {
        return fail(failures.join("; "), retryable);
    }
    match GroupExpression::compile(
        &config.expression,
        config.policies.keys().map(String::as_str),
    ) {
        Ok(expression) => PolicyState::Group(Arc::new(LoadedGroup {
            id: id.to_string(),
            config,
            expression,
            members,
        })),
        Err(reason) => fail(format!("invalid expression: {reason}"), false),
    }
}

async fn validate_settings(policy: LoadedPolicy) -> (String, PolicyState) {
    let id = policy.id.clone();
    let result = tokio::task::spawn_blocking(move || {
        let verdict = policy
            .module
            .validate_settings(&policy.eval_context(), &policy.settings);
        (policy, verdict)
    })
    .await;
    let state = match result {
        Ok((policy, Ok(verdict))) if verdict.valid => PolicyState::Loaded(Arc::new(policy)),
        Ok((policy, Ok(verdict))) => {
            let reason = format!(
                "settings are invalid: {}",
                verdict.message.as_deref().unwrap_or("(no message)")
            );
            failed_loaded(&policy, cap_text(reason, MAX_MESSAGE_BYTES, "message"))
        }
        Ok((policy, Err(e))) => failed_loaded(
            &policy,
            cap_text(
                format!("settings validation failed: {e}"),
                MAX_MESSAGE_BYTES,
                "message",
            ),
        ),
        Err(e) => failed(&id, format!("settings validation task failed: {e}"), None),
    };
    (id, state)
}

fn failed_loaded(policy: &LoadedPolicy, reason: String) -> PolicyState {
    let mut state = failed_policy(&policy.id, reason, Some(&policy.config));
    state.module_digest = Some(policy.module_digest.clone());
    PolicyState::Failed(Arc::new(state))
}

fn failed(id: &str, reason: String, config: Option<&PolicyConfig>) -> PolicyState {
    PolicyState::Failed(Arc::new(failed_policy(id, reason, config)))
}

fn failed_policy(id: &str, reason: String, config: Option<&PolicyConfig>) -> FailedPolicy {
    FailedPolicy {
        id: id.to_string(),
        reason,
        mode: config.map(|c| c.policy_mode),
        module: config.map(|c| c.module.clone()),
        module_digest: None,
        retryable: false,
    }
}
