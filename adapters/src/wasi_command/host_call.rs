//! `host.call`: a WASI command policy's host capabilities.
//!
//! The signature is waPC's `__host_call` (binding, namespace, operation and
//! payload as pointer and length each); it returns 0 on success and 1 on
//! failure, and the answer (or the error message) is what the guest then
//! reads from stdin. Guest memory is read with bounds checks: a bad pointer
//! traps the guest, never the host.

use wasmtime::{Caller, Extern, Linker};

use super::WasiCommandState;
use crate::wapc::HostFault;
use crate::wapc::host_calls::{MAX_NAME_BYTES, kubewarden_host_call};

/// The bytes at `ptr..ptr + len`, in bounds and at most `max` of them: a
/// guest cannot make the host copy more than the evaluation's transfer cap.
fn read(
    caller: &mut Caller<'_, WasiCommandState>,
    ptr: i32,
    len: i32,
    max: usize,
) -> wasmtime::Result<Vec<u8>> {
    let memory = caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| {
            wasmtime::Error::new(HostFault("the guest does not export its memory".into()))
        })?;
    let data = memory.data(&caller);
    let start = ptr as u32 as usize;
    let len = usize::try_from(len).map_err(|_| {
        wasmtime::Error::new(HostFault(format!("host.call: negative length {len}")))
    })?;
    if len > max {
        return Err(wasmtime::Error::new(HostFault(format!(
            "host.call: {len} bytes exceed the limit of {max} bytes"
        ))));
    }
    start
        .checked_add(len)
        .filter(|end| *end <= data.len())
        .map(|end| data[start..end].to_vec())
        .ok_or_else(|| {
            wasmtime::Error::new(HostFault(format!(
                "host.call: guest memory access out of bounds: {len} bytes at {start:#x}"
            )))
        })
}

fn read_string(
    caller: &mut Caller<'_, WasiCommandState>,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<String> {
    String::from_utf8(read(caller, ptr, len, MAX_NAME_BYTES)?)
        .map_err(|_| wasmtime::Error::new(HostFault("host.call: a name is not UTF-8".into())))
}

pub(super) fn add_to_linker(linker: &mut Linker<WasiCommandState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "host",
        "call",
        |mut caller: Caller<'_, WasiCommandState>,
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
            let max = caller.data().limits.guest.max_transfer_bytes;
            let payload = read(&mut caller, ptr, len, max)?;
            let state = caller.data_mut();
            let outcome = kubewarden_host_call(
                &mut state.limits,
                &state.policy_id,
                state.capabilities.as_ref(),
                (&binding, &namespace, &operation),
                &payload,
            );
            let (status, answer) = match outcome {
                Ok(answer) => (0, answer),
                Err(message) => (1, message.into_bytes()),
            };
            state.stdin.refill(&answer);
            Ok(status)
        },
    )?;
    Ok(())
}
