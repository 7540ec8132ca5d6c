//! One request through the edge: route lookup, header rewriting like
//! configurable-http-proxy (`X-Forwarded-*`, Host kept), streaming both ways, WebSocket
//! upgrades spliced at the byte level, and hub fallback with retry on refused connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ganymede_events::{RouteTable, Scheme, Upstream};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tracing::debug;

use crate::activity::{Activity, now_ms};
use crate::hubs::HubPool;
use crate::pages::{self, Body};

pub struct Proxy {
    pub table: Arc<ArcSwap<RouteTable>>,
    pub hubs: Arc<HubPool>,
    pub client: Client<HttpConnector, Body>,
    pub host_routing: bool,
    pub response_timeout: Duration,
    /// `https` when the edge terminates TLS.
    pub scheme: &'static str,
    pub activity: Arc<Activity>,
    /// This worker's activity shard.
    pub worker: usize,
}

/// What kind of route served a request, for metrics (a bounded label set).
#[derive(Clone, Copy)]
enum Kind {
    User,
    Service,
    Route,
    Hub,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Service => "service",
            Kind::Route => "route",
            Kind::Hub => "hub",
        }
    }

    fn of(route_key: &str) -> Kind {
        if route_key.starts_with("/user/") {
            Kind::User
        } else if route_key.starts_with("/services/") {
            Kind::Service
        } else {
            Kind::Route
        }
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    let connection_upgrade = headers.get_all(header::CONNECTION).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    upgrade && connection_upgrade
}

/// The header a request's id travels in to the hubs, which log under it.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: the client's when it is a sane one, else a new one, set on the
/// request either way.
fn ensure_request_id(headers: &mut HeaderMap) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
        let nanos = std::time::UNIX_EPOCH.elapsed().map_or(0, |since| since.subsec_nanos());
        nanos ^ std::process::id().rotate_left(16)
    });
    if let Some(id) = headers.get(&REQUEST_ID).and_then(|value| value.to_str().ok())
        && (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return id.to_owned();
    }
    let id = format!("{:08x}-{:x}", *PREFIX, NEXT.fetch_add(1, Ordering::Relaxed));
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, value);
    }
    id
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

impl Proxy {
    pub async fn handle(&self, mut request: Request<Incoming>, client_addr: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let accept = request.headers().get(header::ACCEPT).cloned();
        if request.uri().path() == "/_chp_healthz" {
            return pages::healthz();
        }
        let host = request_host(&request);
        let websocket = is_websocket_upgrade(request.headers());
        add_forwarded(
            request.headers_mut(),
            client_addr,
            host.as_deref(),
            self.scheme,
            websocket,
        );
        if let Some(host) = &host {
            // HTTP/2 carries the host in the URI; upstreams speak HTTP/1.1 and need Host.
            if !request.headers().contains_key(header::HOST)
                && let Ok(value) = HeaderValue::from_str(host)
            {
                request.headers_mut().insert(header::HOST, value);
            }
        }
        let table = self.table.load();
        let routing_host = if self.host_routing { host.as_deref() } else { None };
        let route = table.lookup(routing_host, request.uri().path()).cloned();
        drop(table);
        let (kind, response) = match route {
            Some(route) => {
                let kind = Kind::of(&route.path);
                let route_key = route.path.clone();
                let response = match &route.upstream {
                    Upstream::Http {
                        scheme,
                        authority,
                        base_path,
                    } => {
                        let scheme = match scheme {
                            Scheme::Http => "http",
                            Scheme::Https => "https",
                        };
                        match upstream_uri(scheme, authority, base_path, request.uri()) {
                            Some(uri) => self.forward(request, uri, websocket, accept.as_ref()).await,
                            None => pages::error(StatusCode::BAD_REQUEST, "Bad request path.", accept.as_ref()),
                        }
                    }
                    Upstream::Invalid { target } => {
                        debug!(%target, "route with an unusable target");
                        pages::error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "This route's target is not a usable URL.",
                            accept.as_ref(),
                        )
                    }
                };
                // configurable-http-proxy's rule: a response below 300 is activity.
                if response.status().as_u16() < 300 {
                    self.activity.record(self.worker, &route_key, now_ms());
                }
                (kind, response)
            }
            None => (Kind::Hub, self.to_hub(request, websocket, accept.as_ref()).await),
        };
        let class = match response.status().as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        metrics::counter!("ganymede_edge_requests_total", "code" => class, "kind" => kind.label()).increment(1);
        metrics::histogram!("ganymede_edge_request_duration_seconds", "kind" => kind.label())
            .record(started.elapsed().as_secs_f64());
        response
    }

    /// Sends the request to a hub replica; when a hub refuses the connection (nothing was
    /// sent) and the body is empty, tries the next one.
    async fn to_hub(
        &self,
        request: Request<Incoming>,
        websocket: bool,
        accept: Option<&HeaderValue>,
    ) -> Response<Body> {
        if self.hubs.is_empty() {
            return pages::error(StatusCode::NOT_FOUND, "No route for this path.", accept);
        }
        let replayable = request.body().is_end_stream() && !websocket;
        // A safe request may also be replayed when the hub dropped the connection before
        // answering (it was killed mid-request).
        let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        let (mut parts, body) = request.into_parts();
        let request_id = ensure_request_id(&mut parts.headers);
        let mut body = Some(body);
        let candidates = self.hubs.candidates();
        let last = candidates.len().saturating_sub(1);
        for (index, hub) in candidates.into_iter().enumerate() {
            let Some(uri) = upstream_uri("http", &hub.authority, "", &parts.uri) else {
                return pages::error(StatusCode::BAD_REQUEST, "Bad request path.", accept);
            };
            let mut attempt = Request::from_parts(parts.clone(), ());
            let request = match body.take() {
                Some(body) => attempt.map(|()| body.boxed()),
                None => {
                    *attempt.headers_mut() = parts.headers.clone();
                    attempt.map(|()| Empty::new().map_err(|never| match never {}).boxed())
                }
            };
            match self.send(request, uri, websocket).await {
                Ok(response) => return response,
                Err(Failure::Connect) => {
                    self.hubs.eject(hub);
                    if !replayable || index == last {
                        break;
                    }
                    metrics::counter!("ganymede_edge_hub_retries_total").increment(1);
                }
                Err(Failure::Upstream) if replayable && safe && index < last => {
                    metrics::counter!("ganymede_edge_hub_retries_total").increment(1);
                }
                Err(failure) => return failure.page(accept),
            }
        }
        metrics::counter!("ganymede_edge_hub_unavailable_total").increment(1);
        tracing::warn!(request_id = %request_id, path = %parts.uri.path(), "no hub reachable");
        pages::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "No hub is reachable right now; try again in a moment.",
            accept,
        )
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        uri: Uri,
        websocket: bool,
        accept: Option<&HeaderValue>,
    ) -> Response<Body> {
        match self.send(request.map(|body| body.boxed()), uri, websocket).await {
            Ok(response) => response,
            Err(failure) => failure.page(accept),
        }
    }

    async fn send(&self, mut request: Request<Body>, uri: Uri, websocket: bool) -> Result<Response<Body>, Failure> {
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        let headers = request.headers_mut();
        let upgrade = headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(headers);
        if websocket && let Some(upgrade) = upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, upgrade);
        }
        let sent = tokio::time::timeout(self.response_timeout, self.client.request(request)).await;
        let mut response = match sent {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(err)) if err.is_connect() => {
                debug!(error = %err, "upstream refused");
                return Err(Failure::Connect);
            }
            Ok(Err(err)) => {
                debug!(error = %err, "upstream failed");
                return Err(Failure::Upstream);
            }
            Ok(Ok(response)) => response,
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok(pair) => pair,
                    Err(err) => {
                        debug!(error = %err, "websocket upgrade failed");
                        return;
                    }
                };
                let open = metrics::gauge!("ganymede_edge_open_websockets");
                open.increment(1);
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                open.decrement(1);
                if let Err(err) = copied {
                    debug!(error = %err, "websocket closed with an error");
                }
            });
            return Ok(response.map(|body| body.boxed()));
        }
        strip_hop_by_hop(response.headers_mut());
        Ok(response.map(|body| body.boxed()))
    }
}

enum Failure {
    Connect,
    Timeout,
    Upstream,
}

impl Failure {
    fn page(&self, accept: Option<&HeaderValue>) -> Response<Body> {
        match self {
            // configurable-http-proxy answers 503 when the server cannot be reached;
            // JupyterHub's page for it says the server appears to be down.
            Failure::Connect => pages::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Your server appears to be down. Try restarting it from the hub.",
                accept,
            ),
            Failure::Timeout => pages::error(
                StatusCode::GATEWAY_TIMEOUT,
                "The server did not answer in time.",
                accept,
            ),
            Failure::Upstream => pages::error(
                StatusCode::BAD_GATEWAY,
                "The server sent an invalid response or closed the connection.",
                accept,
            ),
        }
    }
}

/// The host the client asked for: the `Host` header, or the URI's authority (HTTP/2).
fn request_host<B>(request: &Request<B>) -> Option<String> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|authority| authority.to_string()))
}

/// `target` + the request's whole path and query, as CHP does (`includePrefix`).
fn upstream_uri(scheme: &str, authority: &str, base_path: &str, original: &Uri) -> Option<Uri> {
    let path_and_query = original.path_and_query().map_or("/", |pq| pq.as_str());
    format!("{scheme}://{authority}{base_path}{path_and_query}")
        .parse()
        .ok()
}

/// configurable-http-proxy's `xfwd`: append the client to `X-Forwarded-For` (no space
/// after the comma), the port from Host (else the scheme's), the protocol (`ws`/`wss`
/// for websockets), and `X-Forwarded-Host` unless the client set one.
fn add_forwarded(headers: &mut HeaderMap, client: SocketAddr, host: Option<&str>, scheme: &str, websocket: bool) {
    let client_ip = client.ip().to_string();
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|value| value.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing},{client_ip}"),
        _ => client_ip,
    };
    let https = scheme == "https";
    let port = host
        .and_then(|host| host.rsplit_once(':'))
        .map(|(_, port)| port)
        .filter(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .unwrap_or_else(|| if https { "443".into() } else { "80".into() });
    let proto = match (websocket, https) {
        (true, true) => "wss",
        (true, false) => "ws",
        (false, true) => "https",
        (false, false) => "http",
    };
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("x-forwarded-for", &forwarded_for);
    set("x-forwarded-port", &port);
    set("x-forwarded-proto", proto);
    if !headers.contains_key("x-forwarded-host")
        && let Some(host) = host
        && let Ok(value) = HeaderValue::from_str(host)
    {
        headers.insert("x-forwarded-host", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_to_hubs_carry_an_id_the_client_cannot_abuse() {
        let mut headers = HeaderMap::new();
        let made = ensure_request_id(&mut headers);
        assert_eq!(headers[&REQUEST_ID], made.as_str());
        let mut again = HeaderMap::new();
        assert_ne!(ensure_request_id(&mut again), made, "ids are unique");
        // A sane id from the client is kept; one that could forge log lines is replaced.
        let mut given = HeaderMap::new();
        given.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ensure_request_id(&mut given), "abc-123");
        let mut forged = HeaderMap::new();
        forged.insert(REQUEST_ID, HeaderValue::from_static("a b=\"c\""));
        let replaced = ensure_request_id(&mut forged);
        assert_ne!(replaced, "a b=\"c\"");
        assert_eq!(forged[&REQUEST_ID], replaced.as_str());
    }

    #[test]
    fn forwarded_headers_like_chp() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.9.9.9"));
        let client: SocketAddr = "127.0.0.1:5555".parse().expect("addr");
        add_forwarded(&mut headers, client, Some("hub.example.org:8443"), "http", false);
        assert_eq!(headers["x-forwarded-for"], "10.9.9.9,127.0.0.1");
        assert_eq!(headers["x-forwarded-port"], "8443");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "hub.example.org:8443");

        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-host", HeaderValue::from_static("outer.example.org"));
        add_forwarded(&mut headers, client, Some("hub.example.org"), "https", true);
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers["x-forwarded-port"], "443");
        assert_eq!(headers["x-forwarded-proto"], "wss");
        assert_eq!(headers["x-forwarded-host"], "outer.example.org");
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_including_those_connection_names() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("token t"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn the_whole_original_path_is_appended_to_the_target() {
        let original: Uri = "/user/alice/nested/lab?x=1".parse().expect("uri");
        let uri = upstream_uri("http", "127.0.0.1:9000", "/base", &original).expect("uri");
        assert_eq!(uri.to_string(), "http://127.0.0.1:9000/base/user/alice/nested/lab?x=1");
    }

    #[test]
    fn websocket_upgrades_are_recognised() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(is_websocket_upgrade(&headers));
        headers.remove(header::CONNECTION);
        assert!(!is_websocket_upgrade(&headers));
    }
}
