//! API Gateway (REST, HTTP API, ALB) request and response ↔ the runtime-free
//! [`ApiRequest`] / [`ApiResponse`] of `tenant_config_shared::api`.

use lambda_http::http::header as http_header;
use lambda_http::{Body, Error, Request, RequestExt, Response};
use tenant_config_shared::api::{ApiRequest, ApiResponse};

pub fn to_api_request(request: &Request) -> ApiRequest<'_> {
    let query = |name: &str| {
        request
            .query_string_parameters_ref()
            .and_then(|query| query.all(name))
            .map(|values| match values.as_slice() {
                [single] => Ok(*single),
                _ => Err(()),
            })
    };
    let keys = query("keys");
    ApiRequest {
        method: request.method().as_str(),
        path: request.uri().path(),
        authorization: header(request, http_header::AUTHORIZATION),
        keys,
        body: match request.body() {
            Body::Text(text) => Some(text.as_str()),
            Body::Binary(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        },
        if_match: header(request, http_header::IF_MATCH),
        if_none_match: header(request, http_header::IF_NONE_MATCH),
        dry_run: query("dry_run"),
        force: query("force"),
    }
}

fn header(request: &Request, name: http_header::HeaderName) -> Option<&str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

pub fn to_lambda_response(response: ApiResponse) -> Result<Response<Body>, Error> {
    let mut builder = Response::builder().status(response.status);
    for (name, value) in response.headers {
        builder = builder.header(name, value);
    }
    Ok(builder.body(Body::Text(response.body))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::request::from_str;

    fn request(fixture: &str) -> Request {
        from_str(fixture).expect("fixture is an API Gateway event")
    }

    #[test]
    fn rest_api_event_maps_path_token_and_keys() {
        let event = request(include_str!("../../../events/apigw-rest-get-configs.json"));
        let api = to_api_request(&event);
        assert_eq!(api.method, "GET");
        assert!(api.path.ends_with("/v1/config/billing"), "{}", api.path);
        assert_eq!(api.authorization, Some("Bearer ${ID_TOKEN}"));
        assert_eq!(
            api.keys,
            Some(Ok(
                "param_config_endpoint,param_config_regions,tenant_config_limits"
            ))
        );
    }

    #[test]
    fn a_whole_service_event_has_no_keys() {
        let event = request(include_str!("../../../events/apigw-rest-get-service.json"));
        let api = to_api_request(&event);
        assert!(api.path.ends_with("/v1/config/billing"), "{}", api.path);
        assert_eq!(api.keys, None);
    }

    #[test]
    fn a_repeated_keys_parameter_is_flagged() {
        let mut event: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/apigw-rest-get-configs.json"))
                .unwrap();
        event["multiValueQueryStringParameters"]["keys"] = serde_json::json!(["a", "b"]);
        let event = request(&event.to_string());
        assert_eq!(to_api_request(&event).keys, Some(Err(())));
    }

    #[test]
    fn write_events_map_method_preconditions_and_body() {
        let put = request(include_str!("../../../events/apigw-rest-put-config.json"));
        let api = to_api_request(&put);
        assert_eq!(api.method, "PUT");
        assert!(
            api.path
                .ends_with("/v1/config/billing/tenant_config_banner"),
            "{}",
            api.path
        );
        assert_eq!(api.authorization, Some("Bearer ${ADMIN_ID_TOKEN}"));
        assert_eq!((api.if_match, api.if_none_match), (None, Some("*")));
        let body: serde_json::Value = serde_json::from_str(api.body.unwrap()).unwrap();
        assert!(body["value"].is_object(), "{body}");

        let delete = request(include_str!(
            "../../../events/apigw-rest-delete-config.json"
        ));
        let api = to_api_request(&delete);
        assert_eq!(api.method, "DELETE");
        assert_eq!((api.if_match, api.if_none_match), (Some("\"1\""), None));
        assert_eq!(api.body, None);
    }

    #[test]
    fn responses_keep_status_headers_and_body() {
        let response = to_lambda_response(ApiResponse {
            status: 409,
            headers: vec![("cache-control", "no-store".to_owned())],
            body: "{}".to_owned(),
        })
        .unwrap();
        assert_eq!(response.status(), 409);
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
}
