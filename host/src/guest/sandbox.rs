//! What a guest may reach: WASI, with nothing granted.
//!
//! Rust guests built for `wasm32-unknown-unknown` import nothing. Guests written in Python
//! (componentize-py) or JavaScript (componentize-js) import WASI because their language
//! runtimes do, whether or not the guest's own code uses it. The host links every WASI 0.2
//! interface so such guests instantiate, but grants nothing: no preopened directories, no
//! environment variables or arguments, no sockets, outgoing HTTP requests denied, stdin empty
//! and stdout/stderr discarded. Clocks and random numbers work (runtimes seed hash tables
//! with them); a guest must not rely on them for its counts, which are written to the
//! changelog once and never recomputed.
//!
//! Any import outside `wasi:` is refused at load time by the guest's interface check.

use std::future::Future;

use anyhow::{Result, anyhow};
use wasmtime::StoreLimits;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// The namespace of the only imports a guest may have.
pub const ALLOWED_IMPORT_NAMESPACE: &str = "wasi:";

/// Per-instance state: the memory limit and an empty WASI context.
pub struct GuestState {
    pub limits: StoreLimits,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    deny_http: DenyHttp,
}

impl GuestState {
    pub fn new(limits: StoreLimits) -> GuestState {
        GuestState {
            limits,
            // No inherit_* call: no files, env, args, network; stdio goes nowhere.
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            deny_http: DenyHttp,
        }
    }
}

/// A linker with every WASI 0.2 interface (including `wasi:http`) defined, backed by the
/// empty context above.
pub fn linker<T: WasiView + WasiHttpView + 'static>(engine: &wasmtime::Engine) -> Result<Linker<T>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| anyhow!("linking WASI: {e:#}"))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)
        .map_err(|e| anyhow!("linking WASI HTTP: {e:#}"))?;
    Ok(linker)
}

/// True when a guest may import `name` (an interface or function of WASI).
pub fn is_allowed_import(name: &str) -> bool {
    name.starts_with(ALLOWED_IMPORT_NAMESPACE)
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.deny_http }
    }
}

/// Refuses every outgoing HTTP request.
struct DenyHttp;

type Response = (::http::Response<WasiBody>, Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>);

impl WasiHttpHooks for DenyHttp {
    fn send_request(
        &mut self,
        _request: ::http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = wasmtime_wasi_http::Result<Response>> + Send> {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}
