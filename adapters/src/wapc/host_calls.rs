//! The waPC host imports (module `wapc`), each with bounds-checked access to
//! guest memory: a bad pointer or length traps the guest, never the host.

use wasmtime::{Caller, Extern, Linker};

use super::WapcState;

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

fn read(caller: &mut Caller<'_, WapcState>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let mem = memory(caller)?;
    let data = mem.data(&caller);
    let len = usize::try_from(len).map_err(|_| fault(format!("negative length {len}")))?;
    Ok(data[span(ptr, len, data.len())?].to_vec())
}

fn read_string(caller: &mut Caller<'_, WapcState>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    String::from_utf8(read(caller, ptr, len)?).map_err(|_| fault("string is not UTF-8"))
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
            let bytes = read(&mut caller, ptr, len)?;
            caller.data_mut().call.guest_response = Some(bytes);
            Ok(())
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__guest_error",
        |mut caller: Caller<'_, WapcState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let bytes = read(&mut caller, ptr, len)?;
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
            let binding = read_string(&mut caller, bd_ptr, bd_len)?;
            let namespace = read_string(&mut caller, ns_ptr, ns_len)?;
            let operation = read_string(&mut caller, op_ptr, op_len)?;
            let payload = read(&mut caller, ptr, len)?;
            let state = caller.data_mut();
            state.call.host_response = None;
            state.call.host_error = None;
            let outcome = host_call(state, &binding, &namespace, &operation, &payload);
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
            let bytes = read(&mut caller, ptr, len)?;
            let policy = caller.data().policy_id.clone();
            tracing::debug!(target: "policy_log", policy = %policy, "{}", String::from_utf8_lossy(&bytes));
            Ok(())
        },
    )?;
    Ok(())
}

/// Route one `__host_call`. Only Kubewarden's `kubewarden` binding exists; its
/// `tracing/log` call is always allowed, everything else is the embedder's to
/// grant.
fn host_call(
    state: &WapcState,
    binding: &str,
    namespace: &str,
    operation: &str,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    if binding != "kubewarden" {
        return Err(format!(
            "unknown host-call binding {binding:?}; only \"kubewarden\" exists"
        ));
    }
    if namespace == "tracing" && operation == "log" {
        crate::guest_log::log_kubewarden_event(&state.policy_id, payload);
        return Ok(Vec::new());
    }
    let ctx = crate::capabilities::CallContext {
        policy_id: &state.policy_id,
        deadline: state.limits.deadline,
    };
    state
        .capabilities
        .call(&ctx, namespace, operation, payload)
        .map_err(|e| e.to_string())
}
