//! The edge's own answers: small error pages, as HTML or as JupyterHub's JSON error shape
//! (`{"status", "message"}`) when the client asks for JSON.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

pub type Body = BoxBody<Bytes, hyper::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

fn wants_json(accept: Option<&HeaderValue>) -> bool {
    accept
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json") && !accept.contains("text/html"))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn error(status: StatusCode, message: &str, accept: Option<&HeaderValue>) -> Response<Body> {
    let (content_type, body) = if wants_json(accept) {
        let body = serde_json::json!({"status": status.as_u16(), "message": message});
        ("application/json", body.to_string())
    } else {
        let title = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("Error"));
        (
            "text/html; charset=utf-8",
            format!(
                "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
                 <body><h1>{title}</h1><p>{}</p></body></html>\n",
                escape(message)
            ),
        )
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub fn healthz() -> Response<Body> {
    let mut response = Response::new(full(r#"{"status":"OK"}"#));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
