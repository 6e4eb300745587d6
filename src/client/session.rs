//! A client's session: the `authorization` header its calls carry and, when it signed in with
//! a password, how and when it signs in again. A client and its clones share one session,
//! behind an async lock that a sign-in holds, so that they sign in once between them rather
//! than once each (the server checks one address's passwords one at a time).

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::HandshakeRequest;
use arrow_flight::flight_service_client::FlightServiceClient;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::protocol::credentials::{AUTHORIZATION, AuthProblem, Credentials, TOKEN_TTL_HEADER};

/// The share of a session's lifetime after which a client signs in again before a call.
const RENEW_AFTER_SHARE: f64 = 0.9;

/// A session, shared by a client and its clones.
pub(super) type SharedSession = Arc<Mutex<Session>>;

/// The credentials a client's calls carry, and how to renew them.
#[derive(Debug, Default)]
pub(super) struct Session {
    /// The `authorization` header of every call (marked sensitive: never in debug output).
    authorization: Option<MetadataValue<Ascii>>,
    /// The password credentials signed in with, to sign in again.
    password: Option<Credentials>,
    /// When to sign in again before a call: once 90% of the session's lifetime (the server's
    /// `x-flightcache-token-ttl`) has passed; `None` if the server did not say.
    renew_at: Option<Instant>,
}

impl Session {
    /// A session of the API or session token `token`, which is never renewed.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] if the token cannot be a header value.
    pub(super) fn with_token(token: &str) -> Result<Self> {
        Ok(Self {
            authorization: Some(sensitive(
                Credentials::Bearer(token.to_string()).to_header(),
            )?),
            ..Self::default()
        })
    }

    /// A session signed in over `flight` with the password credentials `basic`.
    ///
    /// # Errors
    /// [`Error::Rpc`] with UNAUTHENTICATED for wrong credentials.
    pub(super) async fn with_password(
        flight: FlightServiceClient<Channel>,
        basic: Credentials,
    ) -> Result<Self> {
        let mut session = Self {
            password: Some(basic),
            ..Self::default()
        };
        session.sign_in(flight).await?;
        Ok(session)
    }

    /// The `authorization` header calls carry, if any.
    pub(super) fn authorization(&self) -> Option<&MetadataValue<Ascii>> {
        self.authorization.as_ref()
    }

    /// Whether the session is near its end and can be renewed.
    pub(super) fn is_due(&self) -> bool {
        self.password.is_some() && self.renew_at.is_some_and(|at| Instant::now() >= at)
    }

    /// Sign in with the kept password through the Handshake, as pyarrow's
    /// `authenticate_basic_token` does, and take the bearer token it answers (none from a
    /// server without users) and its lifetime.
    ///
    /// # Errors
    /// [`Error::Rpc`] with UNAUTHENTICATED for wrong credentials (or none kept).
    pub(super) async fn sign_in(&mut self, mut flight: FlightServiceClient<Channel>) -> Result<()> {
        let Some(basic) = &self.password else {
            return Err(Error::Unauthenticated {
                problem: AuthProblem::NoCredentials,
            });
        };
        let mut request = tonic::Request::new(futures::stream::empty::<HandshakeRequest>());
        request
            .metadata_mut()
            .insert(AUTHORIZATION, sensitive(basic.to_header())?);
        let response = flight
            .handshake(request)
            .await
            .map_err(|s| Error::from_status(s, None))?;
        let metadata = response.metadata();
        self.authorization = metadata.get(AUTHORIZATION).cloned().map(|mut value| {
            value.set_sensitive(true);
            value
        });
        let ttl = metadata
            .get(TOKEN_TTL_HEADER)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
            .map(Duration::from_secs);
        // A lifetime too long to add to the clock is one never renewed ahead.
        self.renew_at =
            ttl.and_then(|ttl| Instant::now().checked_add(ttl.mul_f64(RENEW_AFTER_SHARE)));
        Ok(())
    }

    /// After a call presenting `stale` was refused as unauthenticated: sign in again, unless
    /// a clone did since; whether the call can be tried again with a new header.
    ///
    /// # Errors
    /// The sign-in's error.
    pub(super) async fn renew_after_refusal(
        &mut self,
        stale: Option<&MetadataValue<Ascii>>,
        flight: FlightServiceClient<Channel>,
    ) -> Result<bool> {
        if self.password.is_none() {
            return Ok(false);
        }
        if self.authorization.as_ref() == stale {
            self.sign_in(flight).await?;
        }
        Ok(true)
    }

    /// After an upload presenting `stale` was refused as unauthenticated (an upload cannot be
    /// sent twice): the next call signs in again first, unless a clone did since.
    pub(super) fn renew_before_next_call(&mut self, stale: Option<&MetadataValue<Ascii>>) {
        if self.password.is_some() && self.authorization.as_ref() == stale {
            self.renew_at = Some(Instant::now());
        }
    }
}

/// `value` as a header value marked sensitive (left out of debug output).
fn sensitive(value: String) -> Result<MetadataValue<Ascii>> {
    let mut value = MetadataValue::try_from(value).map_err(|_| Error::Unauthenticated {
        problem: AuthProblem::MalformedHeader,
    })?;
    value.set_sensitive(true);
    Ok(value)
}
