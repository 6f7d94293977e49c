//! [`JsonBody`]: the one way a route reads its request body — actix's JSON body
//! reader, at most [`MAX_BODY_BYTES`], whatever the Content-Type (mini-program
//! HTTP clients differ in what they send), failing in the contract's shape.

use std::{future::Future, pin::Pin};

use actix_web::{dev::Payload, error::JsonPayloadError, web, FromRequest, HttpRequest};
use serde::de::DeserializeOwned;

use super::ApiError;

/// Largest request body any route accepts.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A body type, and what the client is told when its body is not one.
pub trait BodyShape: DeserializeOwned {
    /// The `message` of the 400 `invalid_request` for a body of another shape.
    const SHAPE: &'static str;
}

/// An extractor for a JSON body of shape `T`: 413 `payload_too_large` past
/// [`MAX_BODY_BYTES`] (by `Content-Length`, or while reading a chunked body),
/// 400 `invalid_request` with [`BodyShape::SHAPE`] for anything else amiss.
pub struct JsonBody<T>(pub T);

impl<T: BodyShape + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<JsonBody<T>, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = web::JsonBody::<T>::new(req, payload, None, false).limit(MAX_BODY_BYTES);
        Box::pin(async move {
            body.await.map(JsonBody).map_err(|e| match e {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => ApiError::PayloadTooLarge,
                JsonPayloadError::Payload(_) => {
                    ApiError::InvalidRequest("request body could not be read")
                }
                _ => ApiError::InvalidRequest(T::SHAPE),
            })
        })
    }
}
