//! The waPC host imports (module `wapc`), each with bounds-checked access to
//! guest memory: a bad pointer or length traps the guest, never the host, and
//! nothing larger than [`GuestLimits::max_transfer_bytes`](crate::GuestLimits)
//! is copied out of it.

use wasmtime::{Caller, Extern, Linker};

use std::sync::Arc;

use super::WapcState;
use crate::capabilities::HostCapabilities;
use crate::guest_log::GuestLevel;
use crate::limits::StoreLimits;
use crate::limits::deadline;

/// Longest host-call binding, namespace or operation name. Kubewarden's are
/// a few bytes; a longer one is a protocol violation, not a name.
pub(crate) const MAX_NAME_BYTES: usize = 256;

/// A protocol violation by the guest, such as a pointer outside its memory.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct HostFault(pub(crate) String);

/// The buffers of the call in progress.
#[derive(Default)]
pub(super) struct CallState {
    operation: &'static str,
    payload: Vec<u8>,
    pub(super) guest_response: Option<Vec<u8>>,
    pub(super) guest_error: Option<Vec<u8>>,
    host_response: Option<Vec<u8>>,
    host_error: Option<Vec<u8>>,
}

impl CallState {
    pub(super) fn begin(&mut self, operation: &'static str, payload: Vec<u8>) {
        *self = CallState {
            operation,
            payload,
            ..Default::default()
        };
    }
}

fn fault(msg: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(HostFault(msg.into()))
}

fn memory(caller: &mut Caller<'_, WapcState>) -> wasmtime::Result<wasmtime::Memory> {
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| fault("the guest does not export its memory"))
}

fn span(ptr: i32, len: usize, size: usize) -> wasmtime::Result<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    start
        .checked_add(len)
        .filter(|end| *end <= size)
        .map(|end| start..end)
        .ok_or_else(|| {
            fault(format!(
                "guest memory access out of bounds: {len} bytes at {start:#x}, memory is {size} bytes"
            ))
        })
}

/// The bytes at `ptr..ptr + len` of guest memory; the range must be in
/// bounds, and `len` at most `max` (`what` names them in the error).
fn read(
    caller: &mut Caller<'_, WapcState>,
    ptr: i32,
    len: i32,
    max: usize,
    what: &str,
) -> wasmtime::Result<Vec<u8>> {
    let (bytes, cut) = read_head(caller, ptr, len, max)?;
    if cut > 0 {
        return Err(fault(format!(
            "{what} of {} bytes exceeds the limit of {max} bytes",
            bytes.len() + cut
        )));
    }
    Ok(bytes)
}

/// The first `max` bytes at `ptr..ptr + len` (the whole range must be in
/// bounds), and how many bytes past them were left out.
fn read_head(
    caller: &mut Caller<'_, WapcState>,
    ptr: i32,
    len: i32,
    max: usize,
) -> wasmtime::Result<(Vec<u8>, usize)> {
    let mem = memory(caller)?;
    let data = mem.data(&caller);
    let len = usize::try_from(len).map_err(|_| fault(format!("negative length {len}")))?;
    let range = span(ptr, len, data.len())?;
    let kept = len.min(max);
    Ok((data[range.start..range.start + kept].to_vec(), len - kept))
}

fn read_name(
    caller: &mut Caller<'_, WapcState>,
    ptr: i32,
    len: i32,
    what: &str,
) -> wasmtime::Result<String> {
    String::from_utf8(read(caller, ptr, len, MAX_NAME_BYTES, what)?)
        .map_err(|_| fault(format!("{what} is not UTF-8")))
}

fn max_transfer(caller: &Caller<'_, WapcState>) -> usize {
    caller.data().limits.guest.max_transfer_bytes
}

/// Copy one of the state's buffers into guest memory.
fn write_from_state(
    caller: &mut Caller<'_, WapcState>,
    ptr: i32,
    pick: impl Fn(&CallState) -> &[u8],
) -> wasmtime::Result<()> {
    let mem = memory(caller)?;
    let (data, state) = mem.data_and_store_mut(caller);
    let bytes = pick(&state.call);
    let range = span(ptr, bytes.len(), data.len())?;
    data[range].copy_from_slice(bytes);
    Ok(())
}

pub(super) fn add_to_linker(linker: &mut Linker<WapcState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "wapc",
        "__guest_request",
        |mut caller: Caller<'_, WapcState>, op_ptr: i32, ptr: i32| -> wasmtime::Result<()> {
            write_from_state(&mut caller, op_ptr, |c| c.operation.as_bytes())?;
            write_from_state(&mut caller, ptr, |c| &c.payload)
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__guest_response",
        |mut caller: Caller<'_, WapcState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let max = max_transfer(&caller);
            let bytes = read(&mut caller, ptr, len, max, "the policy's answer")?;
            caller.data_mut().call.guest_response = Some(bytes);
            Ok(())
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__guest_error",
        |mut caller: Caller<'_, WapcState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let max = max_transfer(&caller);
            let bytes = read(&mut caller, ptr, len, max, "the policy's error")?;
            caller.data_mut().call.guest_error = Some(bytes);
            Ok(())
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_call",
        |mut caller: Caller<'_, WapcState>,
         bd_ptr: i32,
         bd_len: i32,
         ns_ptr: i32,
         ns_len: i32,
         op_ptr: i32,
         op_len: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<i32> {
            let binding = read_name(&mut caller, bd_ptr, bd_len, "host-call binding")?;
            let namespace = read_name(&mut caller, ns_ptr, ns_len, "host-call namespace")?;
            let operation = read_name(&mut caller, op_ptr, op_len, "host-call operation")?;
            let max = max_transfer(&caller);
            let payload = read(&mut caller, ptr, len, max, "a host-call payload")?;
            let state = caller.data_mut();
            state.call.host_response = None;
            state.call.host_error = None;
            let outcome = host_call(state, &binding, &namespace, &operation, &payload);
            // A capability that answered after the deadline: the guest must
            // not go on computing with it.
            deadline::check(state.limits.deadline)?;
            Ok(match outcome {
                Ok(response) => {
                    state.call.host_response = Some(response);
                    1
                }
                Err(message) => {
                    state.call.host_error = Some(message.into_bytes());
                    0
                }
            })
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_response",
        |mut caller: Caller<'_, WapcState>, ptr: i32| -> wasmtime::Result<()> {
            write_from_state(&mut caller, ptr, |c| {
                c.host_response.as_deref().unwrap_or(&[])
            })
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_response_len",
        |caller: Caller<'_, WapcState>| -> i32 {
            caller
                .data()
                .call
                .host_response
                .as_ref()
                .map_or(0, |r| r.len() as i32)
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_error",
        |mut caller: Caller<'_, WapcState>, ptr: i32| -> wasmtime::Result<()> {
            write_from_state(&mut caller, ptr, |c| c.host_error.as_deref().unwrap_or(&[]))
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_error_len",
        |caller: Caller<'_, WapcState>| -> i32 {
            caller
                .data()
                .call
                .host_error
                .as_ref()
                .map_or(0, |r| r.len() as i32)
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__console_log",
        |mut caller: Caller<'_, WapcState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let state = caller.data_mut();
            let output = state.limits.output(&state.policy_id).clone();
            // Once over budget, the message is bounds-checked and counted,
            // not copied: a flood costs no copies.
            let max = if output.has_room() {
                state.limits.guest.max_log_line_bytes
            } else {
                0
            };
            let (bytes, cut) = read_head(&mut caller, ptr, len, max)?;
            output.log_head(GuestLevel::Debug, &String::from_utf8_lossy(&bytes), cut);
            Ok(())
        },
    )?;
    Ok(())
}

/// Route one `__host_call`. Only Kubewarden's `kubewarden` binding exists; its
/// `tracing/log` call is always allowed (within the evaluation's log budget),
/// everything else is the embedder's to grant.
fn host_call(
    state: &mut WapcState,
    binding: &str,
    namespace: &str,
    operation: &str,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    kubewarden_host_call(
        &mut state.limits,
        &state.policy_id,
        state.capabilities.as_ref(),
        (binding, namespace, operation),
        payload,
    )
}

/// Kubewarden's `kubewarden` binding, shared by every adapter that speaks
/// `__host_call` (waPC, WASI commands): `tracing/log` goes to the
/// evaluation's log budget, the rest to the embedder's capabilities, bounded
/// by the evaluation's deadline.
pub(crate) fn kubewarden_host_call(
    limits: &mut StoreLimits,
    policy_id: &Arc<str>,
    capabilities: &dyn HostCapabilities,
    (binding, namespace, operation): (&str, &str, &str),
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    if binding != "kubewarden" {
        return Err(format!(
            "unknown host-call binding {binding:?}; only \"kubewarden\" exists"
        ));
    }
    if namespace == "tracing" && operation == "log" {
        crate::guest_log::log_kubewarden_event(limits.output(policy_id), payload);
        return Ok(Vec::new());
    }
    let ctx = crate::capabilities::CallContext {
        policy_id,
        deadline: limits.deadline,
    };
    capabilities
        .call(&ctx, namespace, operation, payload)
        .map_err(|e| e.to_string())
}
