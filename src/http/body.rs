//! [`JsonBody`]: the one way a route reads its request body — actix's JSON body
//! reader, at most [`MAX_BODY_BYTES`], whatever the Content-Type (mini-program
//! HTTP clients differ in what they send), failing in the contract's shape.

use std::{future::Future, pin::Pin, time::Duration};

use actix_web::{dev::Payload, error::JsonPayloadError, web, FromRequest, HttpRequest};
use serde::de::DeserializeOwned;

use super::ApiError;

/// Largest request body any route accepts.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// How long a body may take to arrive once its headers have: a client that
/// trickles one byte at a time must not hold a worker's connection for long.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// A body type, and what the client is told when its body is not one.
pub trait BodyShape: DeserializeOwned {
    /// The `message` of the 400 `invalid_request` for a body of another shape.
    const SHAPE: &'static str;
}

/// An extractor for a JSON body of shape `T`: 413 `payload_too_large` past
/// [`MAX_BODY_BYTES`] (by `Content-Length`, or while reading a chunked body),
/// 408 `request_timeout` when it has not fully arrived `BODY_TIMEOUT` after the
/// headers, 400 `invalid_request` with [`BodyShape::SHAPE`] for anything else amiss.
///
/// Every body of the API is a JSON object: read as a JSON value first, anything
/// else is refused, since serde would take an array for a struct's fields in
/// order (`["<code>"]` for `{"code": "<code>"}`).
pub struct JsonBody<T>(pub T);

impl<T: BodyShape + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<JsonBody<T>, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = web::JsonBody::<serde_json::Value>::new(req, payload, None, false)
            .limit(MAX_BODY_BYTES);
        Box::pin(async move {
            let Ok(body) = tokio::time::timeout(BODY_TIMEOUT, body).await else {
                return Err(ApiError::RequestTimeout);
            };
            let value = body.map_err(|e| match e {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => ApiError::PayloadTooLarge,
                JsonPayloadError::Payload(_) => {
                    ApiError::InvalidRequest("request body could not be read")
                }
                _ => ApiError::InvalidRequest(T::SHAPE),
            })?;
            if !value.is_object() {
                return Err(ApiError::InvalidRequest(T::SHAPE));
            }
            serde_json::from_value(value)
                .map(JsonBody)
                .map_err(|_| ApiError::InvalidRequest(T::SHAPE))
        })
    }
}
