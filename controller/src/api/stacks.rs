//! Stacks (`/v3/stacks`): Wasmfoundry has one, `wasm` — droplets are WebAssembly and
//! run on any cell, whatever its operating system.

use axum::extract::{Path, State};
use serde_json::{json, Value};

use super::{href, metadata, ok, paginated, ApiResult, Ctl, ListParams, STACK};
use crate::auth::User;
use crate::error::ApiError;
use crate::Controller;

/// The `wasm` stack's guid (fixed: there is only one, on every installation).
const STACK_GUID: &str = "6f1a6b8e-2d4c-4b8a-9c53-7a9e0b1f2c3d";
/// When the stack came to be (it has no record).
const STACK_CREATED: &str = "2026-01-01T00:00:00Z";

fn present(controller: &Controller) -> Value {
    json!({
        "guid": STACK_GUID,
        "created_at": STACK_CREATED,
        "updated_at": STACK_CREATED,
        "name": STACK,
        "description": "WebAssembly components and modules (WASI), run by wasmtime",
        "build_rootfs_image": STACK,
        "run_rootfs_image": STACK,
        "default": true,
        "state": "ACTIVE",
        "metadata": metadata(),
        "links": {"self": href(controller, &format!("/v3/stacks/{STACK_GUID}"))},
    })
}

pub async fn list(State(controller): Ctl, _user: User, params: ListParams) -> ApiResult {
    let wanted = |name: &str, value: &str| {
        params
            .values(name)
            .is_none_or(|values| values.iter().any(|v| v == value))
    };
    let resources: Vec<Value> = if wanted("names", STACK) && wanted("guids", STACK_GUID) {
        vec![present(&controller)]
    } else {
        Vec::new()
    };
    let total = u64::try_from(resources.len()).unwrap_or(0);
    Ok(paginated(&controller, &params, total, resources))
}

pub async fn show(State(controller): Ctl, _user: User, Path(guid): Path<String>) -> ApiResult {
    if guid != STACK_GUID {
        return Err(ApiError::not_found("Stack"));
    }
    Ok(ok(present(&controller)))
}
