//! The guest side of the OPA WebAssembly ABI: the exports the host calls, and
//! bounds-checked access to the guest's memory.
//!
//! Values live in the guest's heap; the host moves them across as text:
//! `opa_json_dump`/`opa_value_dump` write a NUL-terminated string and return
//! its address, `opa_malloc` plus `opa_json_parse`/`opa_value_parse` read one.

use wasmtime::{
    AsContext, AsContextMut, Extern, Instance, Memory, Module, ModuleExport, Store, TypedFunc,
    WasmParams, WasmResults,
};

use super::{RegoFault, RegoState};

/// The longest string read back from the guest (a result, or a builtin's
/// argument). The guest's memory cap bounds what it can build; this bounds
/// what the host copies out of it.
pub(crate) const MAX_GUEST_STRING: usize = 16 << 20;

/// Where the exports are found in every instance of one module, resolved once.
pub(crate) struct ExportIndices {
    memory: ModuleExport,
    malloc: ModuleExport,
    json_parse: ModuleExport,
    value_parse: ModuleExport,
    json_dump: ModuleExport,
    value_dump: ModuleExport,
    heap_ptr_get: ModuleExport,
    heap_ptr_set: ModuleExport,
    /// The one-call evaluation of ABI 1.2 and later.
    eval_fast: Option<ModuleExport>,
    ctx_new: ModuleExport,
    ctx_set_input: ModuleExport,
    ctx_set_data: ModuleExport,
    ctx_set_entrypoint: ModuleExport,
    ctx_get_result: ModuleExport,
    eval: ModuleExport,
    builtins: ModuleExport,
    entrypoints: ModuleExport,
}

impl ExportIndices {
    pub(crate) fn resolve(module: &Module) -> Result<Self, String> {
        let get = |name: &str| {
            module
                .get_export_index(name)
                .ok_or_else(|| format!("the module does not export {name}"))
        };
        Ok(ExportIndices {
            memory: get("memory")?,
            malloc: get("opa_malloc")?,
            json_parse: get("opa_json_parse")?,
            value_parse: get("opa_value_parse")?,
            json_dump: get("opa_json_dump")?,
            value_dump: get("opa_value_dump")?,
            heap_ptr_get: get("opa_heap_ptr_get")?,
            heap_ptr_set: get("opa_heap_ptr_set")?,
            eval_fast: module.get_export_index("opa_eval"),
            ctx_new: get("opa_eval_ctx_new")?,
            ctx_set_input: get("opa_eval_ctx_set_input")?,
            ctx_set_data: get("opa_eval_ctx_set_data")?,
            ctx_set_entrypoint: get("opa_eval_ctx_set_entrypoint")?,
            ctx_get_result: get("opa_eval_ctx_get_result")?,
            eval: get("eval")?,
            builtins: get("builtins")?,
            entrypoints: get("entrypoints")?,
        })
    }
}

/// `opa_eval(reserved, entrypoint, data, input, input_len, heap, format) -> result`.
type OpaEval = TypedFunc<(i32, i32, i32, i32, i32, i32, i32), i32>;

/// The guest functions of one instance, typed.
#[derive(Clone)]
pub(crate) struct Guest {
    pub(crate) memory: Memory,
    malloc: TypedFunc<i32, i32>,
    json_parse: TypedFunc<(i32, i32), i32>,
    value_parse: TypedFunc<(i32, i32), i32>,
    json_dump: TypedFunc<i32, i32>,
    value_dump: TypedFunc<i32, i32>,
    heap_ptr_get: TypedFunc<(), i32>,
    heap_ptr_set: TypedFunc<i32, ()>,
    eval_fast: Option<OpaEval>,
    ctx_new: TypedFunc<(), i32>,
    ctx_set_input: TypedFunc<(i32, i32), ()>,
    ctx_set_data: TypedFunc<(i32, i32), ()>,
    ctx_set_entrypoint: TypedFunc<(i32, i32), ()>,
    ctx_get_result: TypedFunc<i32, i32>,
    eval: TypedFunc<i32, i32>,
    builtins: TypedFunc<(), i32>,
    entrypoints: TypedFunc<(), i32>,
}

fn protocol(msg: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(RegoFault::Protocol(msg.into()))
}

impl Guest {
    pub(crate) fn bind(
        instance: &Instance,
        store: &mut Store<RegoState>,
        idx: &ExportIndices,
    ) -> wasmtime::Result<Self> {
        fn export(
            instance: &Instance,
            store: &mut Store<RegoState>,
            i: &ModuleExport,
            what: &str,
        ) -> wasmtime::Result<Extern> {
            instance
                .get_module_export(&mut *store, i)
                .ok_or_else(|| protocol(format!("{what} is missing in the instance")))
        }
        fn func<P: WasmParams, R: WasmResults>(
            instance: &Instance,
            store: &mut Store<RegoState>,
            i: &ModuleExport,
            what: &str,
        ) -> wasmtime::Result<TypedFunc<P, R>> {
            export(instance, store, i, what)?
                .into_func()
                .ok_or_else(|| protocol(format!("{what} is not a function")))?
                .typed::<P, R>(&*store)
                .map_err(|e| protocol(format!("{what}: {e}")))
        }
        let memory = export(instance, store, &idx.memory, "memory")?
            .into_memory()
            .ok_or_else(|| protocol("`memory` is not a memory"))?;
        let eval_fast = match &idx.eval_fast {
            Some(i) => Some(func(instance, store, i, "opa_eval")?),
            None => None,
        };
        Ok(Guest {
            memory,
            malloc: func(instance, store, &idx.malloc, "opa_malloc")?,
            json_parse: func(instance, store, &idx.json_parse, "opa_json_parse")?,
            value_parse: func(instance, store, &idx.value_parse, "opa_value_parse")?,
            json_dump: func(instance, store, &idx.json_dump, "opa_json_dump")?,
            value_dump: func(instance, store, &idx.value_dump, "opa_value_dump")?,
            heap_ptr_get: func(instance, store, &idx.heap_ptr_get, "opa_heap_ptr_get")?,
            heap_ptr_set: func(instance, store, &idx.heap_ptr_set, "opa_heap_ptr_set")?,
            eval_fast,
            ctx_new: func(instance, store, &idx.ctx_new, "opa_eval_ctx_new")?,
            ctx_set_input: func(
                instance,
                store,
                &idx.ctx_set_input,
                "opa_eval_ctx_set_input",
            )?,
            ctx_set_data: func(instance, store, &idx.ctx_set_data, "opa_eval_ctx_set_data")?,
            ctx_set_entrypoint: func(
                instance,
                store,
                &idx.ctx_set_entrypoint,
                "opa_eval_ctx_set_entrypoint",
            )?,
            ctx_get_result: func(
                instance,
                store,
                &idx.ctx_get_result,
                "opa_eval_ctx_get_result",
            )?,
            eval: func(instance, store, &idx.eval, "eval")?,
            builtins: func(instance, store, &idx.builtins, "builtins")?,
            entrypoints: func(instance, store, &idx.entrypoints, "entrypoints")?,
        })
    }

    /// Copy `bytes` into a fresh heap block and return its address.
    pub(crate) fn write(
        &self,
        mut store: impl AsContextMut,
        bytes: &[u8],
    ) -> wasmtime::Result<i32> {
        let len = i32::try_from(bytes.len()).map_err(|_| protocol("value larger than 2 GiB"))?;
        let addr = self.malloc.call(&mut store, len)?;
        self.memory
            .write(&mut store, addr as u32 as usize, bytes)
            .map_err(|_| protocol(format!("opa_malloc returned {addr:#x}, outside memory")))?;
        Ok(addr)
    }

    /// Parse JSON text into a guest value; returns its address.
    pub(crate) fn parse_json(
        &self,
        mut store: impl AsContextMut,
        text: &[u8],
    ) -> wasmtime::Result<i32> {
        let addr = self.write(&mut store, text)?;
        let value = self
            .json_parse
            .call(&mut store, (addr, text.len() as i32))?;
        if value == 0 {
            return Err(protocol(
                "the guest could not parse a JSON document the host wrote",
            ));
        }
        Ok(value)
    }

    /// Parse Rego value text (JSON plus sets) into a guest value.
    pub(crate) fn parse_value(
        &self,
        mut store: impl AsContextMut,
        text: &[u8],
    ) -> wasmtime::Result<i32> {
        let addr = self.write(&mut store, text)?;
        let value = self
            .value_parse
            .call(&mut store, (addr, text.len() as i32))?;
        if value == 0 {
            return Err(protocol("the guest could not parse a value the host wrote"));
        }
        Ok(value)
    }

    /// The guest value at `addr` as JSON text (sets become arrays).
    pub(crate) fn dump_json(
        &self,
        mut store: impl AsContextMut,
        addr: i32,
    ) -> wasmtime::Result<Vec<u8>> {
        let text = self.json_dump.call(&mut store, addr)?;
        self.read_cstr(&store, text)
    }

    /// The guest value at `addr` as Rego value text (sets kept).
    pub(crate) fn dump_value(
        &self,
        mut store: impl AsContextMut,
        addr: i32,
    ) -> wasmtime::Result<Vec<u8>> {
        let text = self.value_dump.call(&mut store, addr)?;
        self.read_cstr(&store, text)
    }

    /// The NUL-terminated string at `addr`, at most [`MAX_GUEST_STRING`] bytes.
    pub(crate) fn read_cstr(&self, store: impl AsContext, addr: i32) -> wasmtime::Result<Vec<u8>> {
        let data = self.memory.data(&store);
        let start = addr as u32 as usize;
        let tail = data
            .get(start..)
            .ok_or_else(|| protocol(format!("string address {start:#x} is outside memory")))?;
        let window = &tail[..tail.len().min(MAX_GUEST_STRING + 1)];
        match window.iter().position(|b| *b == 0) {
            Some(end) => Ok(window[..end].to_vec()),
            None if window.len() > MAX_GUEST_STRING => {
                Err(wasmtime::Error::new(RegoFault::TooLarge(MAX_GUEST_STRING)))
            }
            None => Err(protocol(format!(
                "string at {start:#x} runs past the end of memory"
            ))),
        }
    }

    pub(crate) fn heap_ptr(&self, store: impl AsContextMut) -> wasmtime::Result<i32> {
        self.heap_ptr_get.call(store, ())
    }

    /// Read the JSON object that `builtins()` or `entrypoints()` returns.
    pub(crate) fn name_table(
        &self,
        mut store: impl AsContextMut,
        which: Table,
    ) -> wasmtime::Result<serde_json::Map<String, serde_json::Value>> {
        let func = match which {
            Table::Builtins => &self.builtins,
            Table::Entrypoints => &self.entrypoints,
        };
        let addr = func.call(&mut store, ())?;
        let text = self.dump_json(&mut store, addr)?;
        serde_json::from_slice(&text)
            .map_err(|e| protocol(format!("{which:?} table is not a JSON object: {e}")))
    }

    /// Evaluate entrypoint `entrypoint` on `input` (JSON text) with the data
    /// at `data` (0: none), starting the heap at `heap`. Returns the result
    /// set as JSON text: `[{"result": ...}]`, or `[]` when undefined.
    pub(crate) fn evaluate(
        &self,
        mut store: impl AsContextMut,
        entrypoint: i32,
        data: i32,
        heap: i32,
        input: &[u8],
    ) -> wasmtime::Result<Vec<u8>> {
        let input_len =
            i32::try_from(input.len()).map_err(|_| protocol("input larger than 2 GiB"))?;
        match &self.eval_fast {
            Some(eval) => {
                // The input is written at the heap's start; the evaluation's
                // own allocations begin after it.
                let start = heap as u32 as u64;
                let end = start + input.len() as u64;
                let size = self.memory.data_size(&store) as u64;
                if end > size {
                    let pages = (end - size).div_ceil(65536);
                    self.memory.grow(&mut store, pages)?;
                }
                self.memory
                    .write(&mut store, start as usize, input)
                    .map_err(|_| protocol("cannot write the input at the heap start"))?;
                let heap_after = i32::try_from(end).map_err(|_| protocol("heap past 2 GiB"))?;
                let result = eval.call(
                    &mut store,
                    (0, entrypoint, data, heap, input_len, heap_after, 0),
                )?;
                self.read_cstr(&store, result)
            }
            None => {
                self.heap_ptr_set.call(&mut store, heap)?;
                let input = self.parse_json(&mut store, input)?;
                let ctx = self.ctx_new.call(&mut store, ())?;
                self.ctx_set_input.call(&mut store, (ctx, input))?;
                if data != 0 {
                    self.ctx_set_data.call(&mut store, (ctx, data))?;
                }
                self.ctx_set_entrypoint
                    .call(&mut store, (ctx, entrypoint))?;
                let status = self.eval.call(&mut store, ctx)?;
                if status != 0 {
                    return Err(wasmtime::Error::new(RegoFault::Abort(format!(
                        "evaluation failed with status {status}"
                    ))));
                }
                let result = self.ctx_get_result.call(&mut store, ctx)?;
                self.dump_json(&mut store, result)
            }
        }
    }
}

/// The two name tables a module exports.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Table {
    Builtins,
    Entrypoints,
}
