//! A stand-in single-user server for proxy tests: answers every path with what it saw
//! (path, headers), echoes WebSocket messages, and answers `…/slow/<ms>` late.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

/// A running upstream; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    stop: CancellationToken,
}

impl Upstream {
    /// Starts on a free loopback port. Responses carry `x-upstream: <name>`.
    pub async fn start(name: &str) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let name_for_handler = name.to_owned();
        let app = Router::new().fallback(move |request: Request| {
            let name = name_for_handler.clone();
            async move { answer(name, request).await }
        });
        let serve_stop = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(serve_stop.cancelled_owned())
                .await;
        });
        Upstream {
            addr,
            name: name.to_owned(),
            stop,
        }
    }

    pub fn target(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn answer(name: String, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    if parts.headers.contains_key("upgrade") {
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade.on_upgrade(echo).into_response(),
            Err(rejection) => rejection.into_response(),
        };
    }
    // A slow server, for timeouts: `/…/slow/<ms>` answers after that long.
    if let Some(ms) = parts
        .uri
        .path()
        .rsplit_once("/slow/")
        .and_then(|(_, ms)| ms.parse::<u64>().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
    }
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = serde_json::json!({
        "upstream": name,
        "uri": parts.uri.to_string(),
        "headers": headers,
    });
    ([("x-upstream", name)], axum::Json(body)).into_response()
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(text) => Message::Text(text),
            Message::Binary(bytes) => Message::Binary(bytes),
            Message::Close(_) => return,
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}
