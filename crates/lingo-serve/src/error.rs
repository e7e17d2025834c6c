//! Errors as the client sees them: a status and `{"error": …, "error_type": …}`, the shape of
//! text-generation-inference's errors. Inside a stream the same object goes out as an event.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 422: the request is well-formed JSON but asks for something invalid.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 500: the model failed on a valid request.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn overloaded(limit: usize) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("the server is at its limit of {limit} concurrent requests: retry later"),
        )
    }

    pub fn error_type(&self) -> &'static str {
        match self.status {
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => "validation",
            StatusCode::TOO_MANY_REQUESTS => "overloaded",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal",
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": self.message, "error_type": self.error_type()})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// A task error: bad input (a wrong head, an over-long text) is the client's, anything else ours.
impl From<lingo_tasks::TaskError> for ApiError {
    fn from(e: lingo_tasks::TaskError) -> Self {
        if e.is_bad_input() {
            ApiError::validation(e.to_string())
        } else {
            ApiError::internal(e.to_string())
        }
    }
}

/// A JSON body. Unlike `axum::Json` it does not insist on a `content-type` (curl users forget it),
/// answers malformed JSON and wrong fields with 422 naming the field (`messages[0].role: …`), and
/// an over-long body with 413.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                ApiError::validation(format!("the body is not valid JSON: {inner}"))
            } else if path == "." {
                ApiError::validation(inner.to_string())
            } else {
                ApiError::validation(format!("field `{path}`: {inner}"))
            }
        })?;
        de.end()
            .map_err(|e| ApiError::validation(format!("the body is not valid JSON: {e}")))?;
        Ok(ApiJson(value))
    }
}
