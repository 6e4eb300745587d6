//! Telling a client's aborted upload from a finished one.
//!
//! tonic 0.14's server-side decoder reports a request body that ends in `RST_STREAM(CANCEL)`
//! exactly as it reports `END_STREAM`: `Streaming::message()` returns `Ok(None)` either way
//! (tonic `codec/decode.rs`, `Direction::Request` with `Code::Cancelled`). For `do_put` that
//! would publish a truncated table. [`AbortWatch`] wraps the service and watches each request
//! body itself; [`BodyAborted`], found in the request's extensions, says whether the body
//! ended in an error.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

/// Set when a request body ended with an error (a reset) rather than a clean end of stream.
#[derive(Debug, Clone, Default)]
pub struct BodyAborted(Arc<AtomicBool>);

impl BodyAborted {
    /// Whether the body ended with an error.
    pub fn is_aborted(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A service wrapper that gives every request a [`BodyAborted`] flag and a body that sets it.
#[derive(Debug, Clone)]
pub struct AbortWatch<S> {
    inner: S,
}

impl<S> AbortWatch<S> {
    /// Watch the request bodies of `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: NamedService> NamedService for AbortWatch<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for AbortWatch<S>
where
    S: Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let aborted = BodyAborted::default();
        request.extensions_mut().insert(aborted.clone());
        let request = request.map(|inner| Body::new(WatchedBody { inner, aborted }));
        self.inner.call(request)
    }
}

/// A request body that records an error ending in its [`BodyAborted`] flag.
struct WatchedBody {
    inner: Body,
    aborted: BodyAborted,
}

impl HttpBody for WatchedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.aborted.set();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
