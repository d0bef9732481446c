//! OFREP over HTTP/1.1 on the agent's reader listener, beside gRPC (one
//! loopback port for both: tonic's router is an axum router, and a request
//! that is not gRPC is routed here by its path).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::api::ApiResponse;
use crate::error::ConfigError;
use crate::ofrep::{
    ErrorCode, EvaluationError, MAX_REQUEST_BYTES, OfrepRequest, OfrepService, refusal,
};

/// The OFREP routes, to merge into the reader listener's router: every path
/// under `/v1/` (OFREP's, or a JSON 404), none of gRPC's `/{package}.{Service}/`.
pub fn routes(ofrep: OfrepService) -> axum::Router {
    axum::Router::new()
        .route("/v1/{*rest}", axum::routing::any(evaluate))
        .with_state(Arc::new(ofrep))
}

async fn evaluate(State(ofrep): State<Arc<OfrepService>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // One byte over the bound is enough to refuse it as OFREP does.
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES + 1).await {
        Ok(body) => body,
        Err(_) => return unparsable(format!("the body is over {MAX_REQUEST_BYTES} bytes")),
    };
    let Ok(body) = std::str::from_utf8(&body) else {
        return unparsable("the body is not UTF-8".to_owned());
    };
    let header = |name: header::HeaderName| header_str(&parts.headers, name);
    let request = OfrepRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        authorization: header(header::AUTHORIZATION),
        body: Some(body),
        if_none_match: header(header::IF_NONE_MATCH),
    };
    let answer = ofrep.handle(&request);
    // Answered before the listener's own call timeout, which would answer an
    // HTTP client with a gRPC status it cannot read.
    match tokio::time::timeout(EVALUATION_TIMEOUT, answer).await {
        Ok(answer) => to_response(answer),
        Err(_) => {
            tracing::warn!(
                path = parts.uri.path(),
                timeout_s = EVALUATION_TIMEOUT.as_secs(),
                "OFREP evaluation timed out"
            );
            to_response(ApiResponse {
                status: 503,
                headers: vec![
                    ("content-type", "application/json".to_owned()),
                    ("cache-control", "no-store".to_owned()),
                    ("retry-after", "1".to_owned()),
                ],
                body: serde_json::to_string(&EvaluationError::new(
                    None,
                    ErrorCode::General,
                    format!("no answer within {} s", EVALUATION_TIMEOUT.as_secs()),
                ))
                .unwrap_or_default(),
            })
        }
    }
}

/// The longest an evaluation may take: a second inside the listener's call
/// timeout ([`crate::agent::server::CALL_TIMEOUT`]).
pub const EVALUATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(9);

/// A body that cannot be read: 400 with OFREP's `PARSE_ERROR`.
fn unparsable(details: String) -> Response {
    to_response(refusal(
        &ConfigError::BadRequest(details.clone()),
        None,
        Some((ErrorCode::ParseError, &details)),
    ))
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn to_response(answer: ApiResponse) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
