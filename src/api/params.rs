//! Query parameters the API's way: an unknown or repeated parameter is a JSON 400 in
//! the upstream's error shape, not ignored (a typo like `identiy=` would widen the
//! answer to everyone) and not axum's plain-text rejection.

use axum::extract::{FromRequestParts, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use serde::de::DeserializeOwned;

/// The query string as `T` (whose struct should `deny_unknown_fields`).
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(t)| Params(t))
            .map_err(|e| {
                super::error(
                    StatusCode::BAD_REQUEST,
                    "400.1 Bad request content",
                    &[format!("query: {}", e.body_text())],
                )
            })
    }
}
