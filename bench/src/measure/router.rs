//! The router decision of issue 21: a warm read from an `http::Request` (what
//! lambda_http hands a function) through our route table, beside the same
//! read through an axum `Router` (lambda_http can run one directly). Both end
//! in the same `ConfigApi::handle`; the axum path adds its routing and
//! extractors (path parameters, headers) on top, an upper bound on what a
//! move to axum would cost per request.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::get;
use http::{HeaderMap, Request, Response, Uri, header};
use tenant_config_shared::api::{ApiRequest, ApiResponse, ConfigApi};
use tower::{Service, ServiceExt};

use crate::stats::Summary;

const PATH: &str = "/v1/config/billing/param_config_endpoint";

fn to_http(response: ApiResponse) -> Response<Body> {
    let mut builder = Response::builder().status(response.status);
    for (name, value) in response.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Body::from(response.body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// What config-api's main does with a request: map it, handle it, map back.
async fn ours(api: &ConfigApi, request: &Request<Body>) -> Response<Body> {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    to_http(
        api.handle(&ApiRequest {
            method: request.method().as_str(),
            path: request.uri().path(),
            authorization,
            ..Default::default()
        })
        .await,
    )
}

/// The read route as an axum handler over the same `ConfigApi`.
async fn read(
    State(api): State<Arc<ConfigApi>>,
    Path((_service, _key)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    to_http(
        api.handle(&ApiRequest {
            method: "GET",
            path: uri.path(),
            authorization,
            ..Default::default()
        })
        .await,
    )
}

fn request(bearer: &str) -> Request<Body> {
    Request::builder()
        .uri(PATH)
        .header(header::AUTHORIZATION, bearer)
        .body(Body::empty())
        .expect("a valid request")
}

/// p50/p99 of `iterations` warm reads each way, the two ways interleaved so
/// the machine's drift falls on both alike.
pub async fn compare(
    api: ConfigApi,
    bearer: &str,
    iterations: usize,
) -> Result<(Summary, Summary), String> {
    let api = Arc::new(api);
    let mut router = axum::Router::new()
        .route("/v1/config/{service}/{key}", get(read))
        .with_state(api.clone());
    for (name, status) in [
        ("ours", ours(&api, &request(bearer)).await.status()),
        (
            "axum",
            router
                .clone()
                .oneshot(request(bearer))
                .await
                .map_err(|e| e.to_string())?
                .status(),
        ),
    ] {
        if status != 200 {
            return Err(format!("warm read through {name}: {status}"));
        }
    }
    let (mut by_us, mut by_axum) = (
        Vec::with_capacity(iterations),
        Vec::with_capacity(iterations),
    );
    for _ in 0..iterations {
        let incoming = request(bearer);
        let started = Instant::now();
        let response = ours(&api, &incoming).await;
        by_us.push(started.elapsed());
        if response.status() != 200 {
            return Err(format!("ours: {}", response.status()));
        }
        let incoming = request(bearer);
        let started = Instant::now();
        let ready = ServiceExt::<Request<Body>>::ready(&mut router)
            .await
            .map_err(|e| e.to_string())?;
        let response = ready.call(incoming).await.map_err(|e| e.to_string())?;
        by_axum.push(started.elapsed());
        if response.status() != 200 {
            return Err(format!("axum: {}", response.status()));
        }
    }
    Ok((Summary::of(by_us), Summary::of(by_axum)))
}
