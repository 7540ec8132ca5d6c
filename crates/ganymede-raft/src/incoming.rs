//! gRPC listeners with a bound on open connections. tonic's `TcpIncoming` accepts
//! without limit: anyone who can reach the Raft or feed port could hold a task and
//! buffers per connection until the process runs out. Past the bound, a new connection
//! is closed at once (and counted), while the ones already open carry on.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted connection that holds its place under the bound until it closes.
pub struct BoundedConnection {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
}

/// Connections accepted on `listener`, at most `max` open at once; `port` names the
/// listener in the `ganymede_grpc_connections_refused_total` counter.
pub fn bounded(
    listener: TcpListener,
    max: usize,
    port: &'static str,
) -> impl Stream<Item = io::Result<BoundedConnection>> + Send + 'static {
    let places = Arc::new(Semaphore::new(max));
    futures::stream::unfold((listener, places), move |(listener, places)| async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: pause rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match places.clone().try_acquire_owned() {
                Ok(place) => {
                    let _ = stream.set_nodelay(true);
                    let connection = BoundedConnection { stream, _place: place };
                    return Some((Ok(connection), (listener, places)));
                }
                Err(_) => {
                    metrics::counter!("ganymede_grpc_connections_refused_total", "port" => port).increment(1);
                    drop(stream);
                }
            }
        }
    })
}

impl Connected for BoundedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for BoundedConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoundedConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn past_the_bound_new_connections_are_closed_and_a_freed_place_is_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let holder = accepted.clone();
        let server = tokio::spawn(async move {
            let mut incoming = Box::pin(bounded(listener, 2, "test"));
            while let Some(Ok(connection)) = incoming.next().await {
                holder.lock().await.push(connection);
            }
        });
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.expect("connect"));
        }
        // The third is closed by the server: its read ends.
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), clients[2].read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
        assert_eq!(accepted.lock().await.len(), 2);
        // One of the first two goes away: a new connection takes its place.
        accepted.lock().await.remove(0);
        let _fourth = TcpStream::connect(addr).await.expect("connect");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while accepted.lock().await.len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "the freed place was not reused");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.abort();
    }
}
