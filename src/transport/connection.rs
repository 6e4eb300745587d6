//! Connections: accepting them within a limit, closing the idle ones, and what each one is
//! doing (requests and uploads in flight), so that no client can hold the server hostage by
//! opening connections, or uploads, and leaving them be.
//!
//! tonic serves the connections [`incoming`] yields. Each is a [`ManagedConnection`]: its
//! [`ConnectionInfo`] rides in every request's extensions, where the router counts the
//! connection's requests in flight and the `do_put` door its uploads. A connection with no
//! request in flight for the idle timeout is closed by its own reads failing (HTTP/2 offers
//! no idle timeout of its own, and tonic's keep-alive pings would keep a connection busy).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::codegen::http;
use tonic::transport::server::{Connected, TlsConnectInfo};

/// How long accepting waits after an error (out of file descriptors, say) before it tries
/// again, rather than spinning.
pub(crate) const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The limits on connections, from the server's configuration.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// What the listener serves, for the logs: "Flight" (`--max-connections`), "metrics".
    pub listener: &'static str,
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
}

/// The connections `listener` accepts, as [`ManagedConnection`]s, within `limits`.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl Stream<Item = io::Result<ManagedConnection>> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    futures::stream::unfold(
        (listener, permits, None::<Instant>),
        move |(listener, permits, mut last_refusal_logged)| async move {
            loop {
                let (socket, remote) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        return Some((Err(err), (listener, permits, last_refusal_logged)));
                    }
                };
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    // Closed at once: the client sees the connection refused, and retries.
                    let now = Instant::now();
                    if last_refusal_logged.is_none_or(|at| now - at >= Duration::from_secs(1)) {
                        last_refusal_logged = Some(now);
                        tracing::warn!(
                            peer = %remote,
                            listener = limits.listener,
                            limit = limits.max_connections,
                            "refusing connections: the listener's connection limit is reached"
                        );
                    }
                    continue;
                };
                socket.set_nodelay(true).ok();
                let connection =
                    ManagedConnection::new(socket, remote, permit, limits.idle_timeout);
                return Some((Ok(connection), (listener, permits, last_refusal_logged)));
            }
        },
    )
}

/// What every request of a connection can see of it (tonic puts it in the extensions).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote: SocketAddr,
    /// The connection's requests and uploads in flight.
    pub state: Arc<ConnectionState>,
}

/// The [`ConnectionInfo`] of a request's connection, with or without TLS (tonic wraps it in
/// `TlsConnectInfo` under TLS).
pub fn connection_info(extensions: &http::Extensions) -> Option<&ConnectionInfo> {
    extensions.get::<ConnectionInfo>().or_else(|| {
        extensions
            .get::<TlsConnectInfo<ConnectionInfo>>()
            .map(TlsConnectInfo::get_ref)
    })
}

/// The certificate chain the client presented over TLS, leaf first, if any.
pub fn client_certificates(
    extensions: &http::Extensions,
) -> Option<Arc<Vec<tonic::transport::CertificateDer<'static>>>> {
    extensions
        .get::<TlsConnectInfo<ConnectionInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
}

/// The requests and uploads in flight on one connection.
#[derive(Debug)]
pub struct ConnectionState {
    /// Requests in flight and since when there are none, changed together under one lock, so
    /// that a request's end and the next one's start cannot leave the connection marked idle
    /// with a request in flight.
    activity: Mutex<Activity>,
    uploads: AtomicUsize,
    /// The connection's reader, to wake when it becomes idle so that it arms its timer.
    reader: AtomicWaker,
}

#[derive(Debug)]
struct Activity {
    requests: usize,
    /// Since when the connection has had no request in flight (`None` while it has some).
    idle_since: Option<Instant>,
}

impl ConnectionState {
    fn new() -> Self {
        Self {
            activity: Mutex::new(Activity {
                requests: 0,
                idle_since: Some(Instant::now()),
            }),
            uploads: AtomicUsize::new(0),
            reader: AtomicWaker::new(),
        }
    }

    /// A request starts; it is in flight until the guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> RequestInFlight {
        let mut activity = self.lock_activity();
        activity.requests += 1;
        activity.idle_since = None;
        RequestInFlight(Arc::clone(self))
    }

    /// Since when the connection has had no request in flight (`None` while it has some).
    fn idle_since(&self) -> Option<Instant> {
        self.lock_activity().idle_since
    }

    /// An upload starts, unless `limit` uploads are in flight on this connection already.
    pub fn try_start_upload(self: &Arc<Self>, limit: usize) -> Option<UploadInFlight> {
        let started = self
            .uploads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |uploads| {
                (uploads < limit).then_some(uploads + 1)
            });
        started.ok().map(|_| UploadInFlight(Arc::clone(self)))
    }

    fn lock_activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        // Nothing panics while it is held: consistent even if poisoned.
        self.activity.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request in flight; dropped when its response is done (or dropped).
#[derive(Debug)]
pub struct RequestInFlight(Arc<ConnectionState>);

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        let state = &self.0;
        let now_idle = {
            let mut activity = state.lock_activity();
            activity.requests -= 1;
            if activity.requests == 0 {
                activity.idle_since = Some(Instant::now());
            }
            activity.requests == 0
        };
        if now_idle {
            state.reader.wake();
        }
    }
}

/// An upload in flight on a connection.
#[derive(Debug)]
pub struct UploadInFlight(Arc<ConnectionState>);

impl Drop for UploadInFlight {
    fn drop(&mut self) {
        self.0.uploads.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An accepted TCP connection that holds its place among `--max-connections`, and whose
/// reads fail once it has been idle for its timeout, which closes it.
pub struct ManagedConnection {
    /// The socket; taken only by `drop`, which closes it without losing what was sent.
    socket: Option<TcpStream>,
    info: ConnectionInfo,
    idle_timeout: Duration,
    idle_timer: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl ManagedConnection {
    fn new(
        socket: TcpStream,
        remote: SocketAddr,
        permit: OwnedSemaphorePermit,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            socket: Some(socket),
            info: ConnectionInfo {
                remote,
                state: Arc::new(ConnectionState::new()),
            },
            idle_timeout,
            idle_timer: Box::pin(tokio::time::sleep(idle_timeout)),
            _permit: permit,
        }
    }

    /// The socket, there until the connection is dropped.
    fn socket(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(
            self.socket
                .as_mut()
                .expect("the socket is taken only by drop"),
        )
    }

    /// Whether the connection has been idle for its timeout; otherwise, arm the timer (and
    /// the state's waker) to be polled again when it might be.
    fn poll_idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let state = &self.info.state;
        state.reader.register(cx.waker());
        let Some(idle_since) = state.idle_since() else {
            return false; // requests in flight; the last one's end wakes this reader
        };
        let deadline = idle_since + self.idle_timeout;
        if self.idle_timer.deadline() != deadline {
            self.idle_timer.as_mut().reset(deadline);
        }
        self.idle_timer.as_mut().poll(cx).is_ready()
    }
}

impl Connected for ManagedConnection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for ManagedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.poll_idle_expired(cx) {
            tracing::debug!(peer = %self.info.remote, "closing an idle connection");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection was idle for the server's --idle-connection-timeout",
            )));
        }
        self.socket().poll_read(cx, buf)
    }
}

impl AsyncWrite for ManagedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.socket().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.socket().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket
            .as_ref()
            .is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket().poll_shutdown(cx)
    }
}

/// How long a closed connection's socket goes on reading what its peer still sends.
const LINGER: Duration = Duration::from_secs(2);

impl Drop for ManagedConnection {
    /// Close the socket without losing what was sent. Closing a socket with unread bytes from
    /// the peer (its last window updates, say) sends a reset, and a reset makes the peer's
    /// system drop what it received and its client has not read yet: the end of a get that
    /// finished as the server stopped. So the sending side is shut (its data, then the end),
    /// and what the peer still sends is read and discarded, until it closes or for
    /// [`LINGER`], before the socket is closed.
    fn drop(&mut self) {
        let Some(mut socket) = self.socket.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            if socket.shutdown().await.is_err() {
                return;
            }
            let mut discarded = [0_u8; 4096];
            let drained = async {
                while let Ok(read) = socket.read(&mut discarded).await {
                    if read == 0 {
                        break;
                    }
                }
            };
            tokio::time::timeout(LINGER, drained).await.ok();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_per_connection_are_bounded_and_given_back() {
        let state = Arc::new(ConnectionState::new());
        let first = state.try_start_upload(2).expect("room for one");
        let second = state.try_start_upload(2).expect("room for two");
        assert!(state.try_start_upload(2).is_none(), "a third is refused");
        drop(first);
        let third = state.try_start_upload(2).expect("room again");
        drop((second, third));
        assert_eq!(state.uploads.load(Ordering::Acquire), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_without_requests_in_flight() {
        let state = Arc::new(ConnectionState::new());
        assert!(state.idle_since().is_some(), "idle from the start");
        let request = state.start_request();
        let other = state.start_request();
        assert!(state.idle_since().is_none());
        drop(request);
        assert!(state.idle_since().is_none(), "one still in flight");
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(other);
        assert_eq!(
            state.idle_since(),
            Some(Instant::now()),
            "idle from the last one's end"
        );
    }
}
