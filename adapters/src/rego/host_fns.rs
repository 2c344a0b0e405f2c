//! The host functions an OPA module imports from `env`: `opa_abort`,
//! `opa_println` and the builtin dispatchers `opa_builtin0` to `opa_builtin4`.

use std::time::Instant;

use wasmtime::{Caller, Extern, Linker, Trap};

use super::abi::MAX_GUEST_STRING;
use super::builtins::{self, Impl, Output, rego_value};
use super::{RegoFault, RegoState};
use crate::guest_log::GuestLevel;

pub(super) fn add_to_linker(linker: &mut Linker<RegoState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "opa_abort",
        |mut caller: Caller<'_, RegoState>, addr: i32| -> wasmtime::Result<()> {
            let message = read_message(&mut caller, addr);
            Err(wasmtime::Error::new(RegoFault::Abort(message)))
        },
    )?;
    linker.func_wrap(
        "env",
        "opa_println",
        |mut caller: Caller<'_, RegoState>, addr: i32| {
            let message = read_message(&mut caller, addr);
            // Under the evaluation's log budget, like every guest's output.
            let state = caller.data_mut();
            state
                .limits
                .output(&state.policy_id)
                .log(GuestLevel::Info, &message, None);
        },
    )?;
    linker.func_wrap(
        "env",
        "opa_builtin0",
        |caller: Caller<'_, RegoState>, id: i32, _ctx: i32| call(caller, id, &[]),
    )?;
    linker.func_wrap(
        "env",
        "opa_builtin1",
        |caller: Caller<'_, RegoState>, id: i32, _ctx: i32, a: i32| call(caller, id, &[a]),
    )?;
    linker.func_wrap(
        "env",
        "opa_builtin2",
        |caller: Caller<'_, RegoState>, id: i32, _ctx: i32, a: i32, b: i32| {
            call(caller, id, &[a, b])
        },
    )?;
    linker.func_wrap(
        "env",
        "opa_builtin3",
        |caller: Caller<'_, RegoState>, id: i32, _ctx: i32, a: i32, b: i32, c: i32| {
            call(caller, id, &[a, b, c])
        },
    )?;
    linker.func_wrap(
        "env",
        "opa_builtin4",
        |caller: Caller<'_, RegoState>, id: i32, _ctx: i32, a: i32, b: i32, c: i32, d: i32| {
            call(caller, id, &[a, b, c, d])
        },
    )?;
    Ok(())
}

/// A NUL-terminated message from the guest, for `opa_abort` and `opa_println`:
/// best effort, since it is only shown.
fn read_message(caller: &mut Caller<'_, RegoState>, addr: i32) -> String {
    let Some(memory) = caller.get_export("memory").and_then(Extern::into_memory) else {
        return "(the module has no memory)".into();
    };
    let data = memory.data(&caller);
    let start = addr as u32 as usize;
    let Some(tail) = data.get(start..) else {
        return format!("(message address {start:#x} is outside memory)");
    };
    let window = &tail[..tail.len().min(4096)];
    let end = window.iter().position(|b| *b == 0).unwrap_or(window.len());
    String::from_utf8_lossy(&window[..end]).into_owned()
}

/// Run builtin `id` on the guest values at `args`; returns the address of the
/// result, or 0 for undefined.
fn call(mut caller: Caller<'_, RegoState>, id: i32, args: &[i32]) -> wasmtime::Result<i32> {
    // Host code is not interrupted by the epoch deadline: check it here, so
    // that a policy calling builtins in a loop stops on time as well.
    if Instant::now() >= caller.data().limits.deadline {
        return Err(wasmtime::Error::new(Trap::Interrupt));
    }
    let state = caller.data();
    let resolved = state
        .info
        .as_ref()
        .and_then(|info| info.builtins.get(id as u32 as usize))
        .and_then(Option::as_ref)
        .cloned()
        .ok_or_else(|| {
            wasmtime::Error::new(RegoFault::Protocol(format!(
                "call of unknown builtin id {id}"
            )))
        })?;
    let Some(func) = resolved.func else {
        return Err(wasmtime::Error::new(RegoFault::UnsupportedBuiltin(
            resolved.name.to_string(),
        )));
    };
    let guest = state.guest.clone().ok_or_else(|| {
        wasmtime::Error::new(RegoFault::Protocol("builtin called too early".into()))
    })?;

    let deadline = caller.data().limits.deadline;
    let policy_id = caller.data().policy_id.clone();
    let protocol = |msg: String| wasmtime::Error::new(RegoFault::Protocol(msg));
    let outcome = match func {
        Impl::Json(f) => {
            let mut values = Vec::with_capacity(args.len());
            for &arg in args {
                let text = guest.dump_json(&mut caller, arg)?;
                values.push(serde_json::from_slice(&text).map_err(|e| {
                    protocol(format!("argument of {} is not JSON: {e}", resolved.name))
                })?);
            }
            let mut ctx = builtins::Context {
                policy_id: &policy_id,
                deadline,
                state: &mut caller.data_mut().builtin_state,
            };
            f(&mut ctx, &values)
        }
        Impl::Rego(f) => {
            let mut values = Vec::with_capacity(args.len());
            for &arg in args {
                let text = guest.dump_value(&mut caller, arg)?;
                let text = std::str::from_utf8(&text)
                    .map_err(|_| protocol(format!("argument of {} is not UTF-8", resolved.name)))?;
                values.push(rego_value::parse(text).map_err(|e| {
                    protocol(format!(
                        "argument of {} is not a Rego value: {e}",
                        resolved.name
                    ))
                })?);
            }
            let mut ctx = builtins::Context {
                policy_id: &policy_id,
                deadline,
                state: &mut caller.data_mut().builtin_state,
            };
            f(&mut ctx, &values)
        }
    };
    let output = match outcome {
        Ok(output) => output,
        Err(e) => {
            // As in OPA (without strict builtin errors): a builtin that fails
            // makes its expression undefined instead of failing the query.
            tracing::debug!(
                target: "policy_log",
                policy = &*policy_id,
                builtin = &*resolved.name,
                error = %e,
                "builtin error; the expression is undefined"
            );
            return Ok(0);
        }
    };
    let (text, rego) = match output {
        Output::Undefined => return Ok(0),
        Output::Value(v) => (serde_json::to_vec(&v)?, false),
        Output::Set(items) => (builtins::set_literal(&items)?, true),
    };
    if text.len() > MAX_GUEST_STRING {
        return Err(wasmtime::Error::new(RegoFault::TooLarge(MAX_GUEST_STRING)));
    }
    if rego {
        guest.parse_value(&mut caller, &text)
    } else {
        guest.parse_json(&mut caller, &text)
    }
}
