//! Reading a request body with a size limit that answers over HTTP/2 too.
//!
//! axum's `DefaultBodyLimit` stops reading at the limit and answers 413
//! while the client is still sending. Over HTTP/1.1 that usually reaches
//! the client; over HTTP/2 the unread request stream is reset as soon as
//! the response is sent, and clients (hyper's, Go's, so the API server's)
//! report the reset instead of the 413. Here the rest of an oversized body
//! is read and thrown away, up to a drain cap, so the stream ends normally
//! and the client reads the JSON 413. The request timeout bounds the time
//! spent; the drain cap bounds the bytes.
//!
//! Bodies being read or processed also draw on one shared byte budget
//! ([`BodyBudget`]): however many connections and HTTP/2 streams clients
//! open, the request bodies the server holds at once stay bounded. A request
//! waits for budget (HTTP/2 flow control then slows its sender down), within
//! the request timeout.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::api_error::ApiError;
use crate::admission::limits::human_size;

/// Oversized bodies are drained up to this many bytes (or four times the
/// limit, if larger) before the 413 is sent; a larger body gets its 413
/// without being read, which an HTTP/2 client may only see as a reset.
const MIN_DRAIN_BYTES: usize = 16 * 1024 * 1024;

/// Bytes of request bodies the server may hold at once: 64 MiB, or 16
/// bodies of the largest size if that is more.
#[derive(Debug, Clone)]
pub(crate) struct BodyBudget(Arc<Semaphore>);

impl BodyBudget {
    /// The budget for bodies of at most `max_body_bytes`.
    pub(crate) fn for_max_body(max_body_bytes: usize) -> Self {
        let bytes = max_body_bytes
            .saturating_mul(16)
            .clamp(64 * 1024 * 1024, Semaphore::MAX_PERMITS);
        Self(Arc::new(Semaphore::new(bytes)))
    }
}

/// A request body and its share of the [`BodyBudget`], returned when this
/// is dropped (once the request is answered).
pub(crate) struct LimitedBody {
    /// The body.
    pub(crate) bytes: Bytes,
    _budget: OwnedSemaphorePermit,
}

/// Reads `body` whole if it is at most `limit` bytes; otherwise drains it
/// (see the module docs) and returns a 413 error.
pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    budget: &BodyBudget,
) -> Result<LimitedBody, ApiError> {
    let take = |n: usize| {
        let semaphore = Arc::clone(&budget.0);
        async move {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            semaphore.acquire_many_owned(n).await.map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the policy-server is shutting down",
                )
            })
        }
    };
    let mut held = take(0).await?;
    let drain_cap = limit.saturating_mul(4).max(MIN_DRAIN_BYTES);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = |size: String| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is too large: {size}, over the {} limit (--max-body-bytes)",
                human_size(limit)
            ),
        )
    };
    if let Some(declared) = declared
        && declared > drain_cap as u64
    {
        return Err(too_large(human_size(
            usize::try_from(declared).unwrap_or(usize::MAX),
        )));
    }
    let capacity = declared
        .and_then(|d| usize::try_from(d).ok())
        .unwrap_or(0)
        .min(limit);
    let mut kept = BytesMut::with_capacity(capacity);
    let mut total: usize = 0;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total <= limit {
            held.merge(take(data.len()).await?);
            kept.extend_from_slice(&data);
        } else {
            // Over the limit: keep nothing, read on to the end (or the cap).
            kept = BytesMut::new();
            held = take(0).await?;
            if total > drain_cap {
                return Err(too_large(format!("more than {}", human_size(drain_cap))));
            }
        }
    }
    if total > limit {
        return Err(too_large(human_size(total)));
    }
    Ok(LimitedBody {
        bytes: kept.freeze(),
        _budget: held,
    })
}
