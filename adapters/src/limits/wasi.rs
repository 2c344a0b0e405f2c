//! WASI for policies: the context every adapter gives a guest, and the two
//! WASI functions that wait, made to end at the evaluation's deadline.
//!
//! wasmtime-wasi's synchronous bindings run a waiting call on a tokio runtime
//! with `block_on`, out of reach of epoch interruption: a guest that sleeps
//! 30 s (Rust's `std::thread::sleep`, Go's `time.Sleep`) would hold its worker
//! for 30 s whatever its deadline. Here WASI 0.1 `poll_oneoff` and WASI 0.2
//! `wasi:io/poll` (`poll`, `pollable.block`) are redefined, on top of
//! wasmtime-wasi's own implementations, to race the deadline
//! ([`super::deadline::block_on`]); the guest then traps with a timeout.
//!
//! No other WASI function can wait in the contexts built by [`ctx_builder`]:
//! stdin is empty, stdout and stderr never block, there are no files, and the
//! network is off, so streams are always ready and sockets cannot be made.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime::{AsContextMut, Caller, Extern};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as p1, WasiSnapshotPreview1};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::sync::io::poll as sync_poll;
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;

use super::output::GuestStdio;
use super::{GuestOutput, StoreLimits, deadline};
use crate::guest_log::StdStream;

/// Store data that carries the evaluation's [`StoreLimits`]: what the shared
/// containment code needs of an adapter's state.
pub(crate) trait Contained: Send + 'static {
    /// The evaluation's limits.
    fn limits(&mut self) -> &mut StoreLimits;
}

/// The WASI context of a policy: nothing to read, nowhere to write but the
/// log, no network, and random reads capped.
pub(crate) fn ctx_builder(output: &Arc<GuestOutput>, limits: &StoreLimits) -> WasiCtxBuilder {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(GuestStdio::new(output.clone(), StdStream::Stdout))
        .stderr(GuestStdio::new(output.clone(), StdStream::Stderr))
        // Sockets would be real file descriptors of the host process.
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .max_random_size(limits.guest.max_random_bytes);
    builder
}

/// WASI 0.1 (`wasi_snapshot_preview1`) for core modules, with a
/// `poll_oneoff` that ends at the deadline.
pub(crate) fn add_p1_to_linker<T: Contained>(
    linker: &mut wasmtime::Linker<T>,
    wasi: fn(&mut T) -> &mut WasiP1Ctx,
) -> wasmtime::Result<()> {
    wasmtime_wasi::p1::add_to_linker_sync(linker, wasi)?;
    linker.allow_shadowing(true);
    // The body of wiggle's generated glue for this function, with the wait
    // run by `deadline::block_on` instead of a plain `block_on`.
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "poll_oneoff",
        move |mut caller: Caller<'_, T>,
              subscriptions: i32,
              events: i32,
              count: i32,
              written: i32|
              -> wasmtime::Result<i32> {
            let deadline = caller.data_mut().limits().deadline;
            let fuel = caller.as_context_mut().hostcall_fuel();
            let export = caller.get_export("memory");
            let (mut memory, ctx) = match &export {
                Some(Extern::Memory(m)) => {
                    let (memory, data) = m.data_and_store_mut(&mut caller);
                    (wiggle::GuestMemory::Unshared(memory), wasi(data))
                }
                Some(Extern::SharedMemory(m)) => (
                    wiggle::GuestMemory::Shared(m.data()),
                    wasi(caller.data_mut()),
                ),
                _ => wasmtime::bail!("missing required memory export"),
            };
            ctx.set_hostcall_fuel(fuel);
            let wait = p1::poll_oneoff(ctx, &mut memory, subscriptions, events, count, written);
            deadline::block_on(deadline, wait)?
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// WASI 0.2 for components, with a `wasi:io/poll` whose `poll` and
/// `pollable.block` end at the deadline.
pub(crate) fn add_p2_to_linker<T: Contained + wasmtime_wasi::WasiView>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    sync_poll::add_to_linker::<T, BoundedPollData>(linker, |data| {
        let deadline = data.limits().deadline;
        BoundedPoll {
            table: data.ctx().table,
            deadline,
        }
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// `wasi:io/poll` over the store's resource table, bounded by the deadline.
struct BoundedPoll<'a> {
    table: &'a mut ResourceTable,
    deadline: Instant,
}

struct BoundedPollData;

impl HasData for BoundedPollData {
    type Data<'a> = BoundedPoll<'a>;
}

impl sync_poll::Host for BoundedPoll<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        let wait = async_poll::Host::poll(&mut *self.table, pollables);
        deadline::block_on(self.deadline, wait)?
    }
}

impl sync_poll::HostPollable for BoundedPoll<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        // Answers at once: wasmtime-wasi polls the pollable's future once.
        sync_poll::HostPollable::ready(&mut *self.table, pollable)
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        let wait = async_poll::HostPollable::block(&mut *self.table, pollable);
        deadline::block_on(self.deadline, wait)?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        sync_poll::HostPollable::drop(&mut *self.table, pollable)
    }
}
