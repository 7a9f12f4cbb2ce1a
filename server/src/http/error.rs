//! The error every HTTP handler returns: a status plus a Matrix error body
//! (`{"errcode": "...", "error": "..."}`), as Synapse answers.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_shared::ParamError;
use serde_json::{json, Map, Value};

use herald_store::StoreError;

/// A failed API request, rendered as a Matrix error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {errcode}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub message: String,
    /// Extra fields of the body (`soft_logout`, `retry_after_ms`).
    pub extra: Vec<(&'static str, Value)>,
}

impl ApiError {
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            errcode,
            message: message.into(),
            extra: Vec::new(),
        }
    }

    pub fn with(mut self, key: &'static str, value: Value) -> Self {
        self.extra.push((key, value));
        self
    }

    pub fn missing_token(message: &str) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN", message)
    }

    pub fn unknown_token() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Invalid access token passed.",
        )
        .with("soft_logout", Value::Bool(false))
    }

    pub fn forbidden(message: &str) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", message)
    }

    pub fn not_found(message: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", message)
    }

    pub fn unrecognized() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        )
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        )
    }

    pub fn limit_exceeded(retry_after_ms: u64) -> Self {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "M_LIMIT_EXCEEDED",
            "Too Many Requests",
        )
        .with("retry_after_ms", Value::from(retry_after_ms))
    }

    /// The Matrix error for a bare HTTP status (an answer that was not
    /// raised as an `ApiError`), with `message` or the status's own words.
    pub fn for_status(status: StatusCode, message: Option<String>) -> Self {
        let errcode = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "M_TOO_LARGE",
            // axum's words for a body it could not read (a broken chunked
            // encoding, a client gone mid-body).
            StatusCode::BAD_REQUEST
                if message
                    .as_deref()
                    .is_some_and(|m| m.contains("request body")) =>
            {
                "M_NOT_JSON"
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "M_NOT_JSON",
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => "M_UNRECOGNIZED",
            StatusCode::UNAUTHORIZED => "M_MISSING_TOKEN",
            StatusCode::FORBIDDEN => "M_FORBIDDEN",
            StatusCode::TOO_MANY_REQUESTS => "M_LIMIT_EXCEEDED",
            _ => "M_UNKNOWN",
        };
        let message = message.unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("Request failed")
                .to_owned()
        });
        ApiError::new(status, errcode, message)
    }

    /// 503: the database cannot be reached or cannot commit now; nothing
    /// was changed, the same request may succeed later.
    pub fn database_unavailable() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "M_UNKNOWN",
            "The database is unavailable: nothing was stored or changed; try again later",
        )
    }

    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "Internal server error",
        )
    }

    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("errcode".into(), json!(self.errcode));
        body.insert("error".into(), json!(self.message));
        for (k, v) in &self.extra {
            body.insert((*k).into(), v.clone());
        }
        Value::Object(body)
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, e.errcode, e.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // Attached: Synapse's database is upstream of Herald.
            StoreError::SynapseUnavailable { .. } => {
                tracing::warn!(error = %e, "Synapse's database does not answer");
                ApiError::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", e.to_string())
            }
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "the database is unavailable");
                ApiError::database_unavailable()
            }
            StoreError::ReadOnly => {
                ApiError::new(StatusCode::BAD_REQUEST, "M_UNKNOWN", e.to_string())
            }
            StoreError::Unstorable(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "M_INVALID_PARAM",
                "a value holds a NUL character, which the database cannot store",
            ),
            e => {
                tracing::error!(error = %e, "database error");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some((_, Value::Number(ms))) =
            self.extra.iter().find(|(k, _)| *k == "retry_after_ms")
        {
            if let Some(secs) = ms.as_u64().map(|ms| ms.div_ceil(1000)) {
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    response.headers_mut().insert("retry-after", v);
                }
            }
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
