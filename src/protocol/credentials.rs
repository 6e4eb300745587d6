//! Credentials on the wire, as Flight clients send them: the `authorization` header, HTTP
//! basic credentials on the Handshake (pyarrow's `authenticate_basic_token`), a bearer token
//! on every later call, and what `whoami` answers.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// The request and response header that carries credentials.
pub const AUTHORIZATION: &str = "authorization";

/// The Handshake response header that says how long its session token is valid, in whole
/// seconds (the server's `--token-ttl`), so that a client can sign in again before it ends.
pub const TOKEN_TTL_HEADER: &str = "x-flightcache-token-ttl";

/// A session token the Handshake issues, and how long it is valid.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken {
    /// The bearer token.
    pub token: String,
    /// How long the server accepts it from now.
    pub ttl: std::time::Duration,
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionToken")
            .field("token", &"<token>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// Credentials a request carries in its `authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Basic base64(user:password)`: only the Handshake takes them.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// `Bearer TOKEN`: a session token from the Handshake, or a static API token.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user}, <password>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<token>)"),
        }
    }
}

impl Credentials {
    /// The credentials of an `authorization` header value, if it holds any.
    ///
    /// # Errors
    /// [`AuthProblem::MalformedHeader`] for a header that is neither well-formed basic nor
    /// bearer credentials.
    pub fn from_header(value: &[u8]) -> Result<Self, AuthProblem> {
        use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
        const BASIC_BASE64: GeneralPurpose = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let text = std::str::from_utf8(value).map_err(|_| AuthProblem::MalformedHeader)?;
        let (scheme, rest) = text
            .trim()
            .split_once(' ')
            .ok_or(AuthProblem::MalformedHeader)?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            return Ok(Credentials::Bearer(rest.to_string()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            // Padding optional: ADBC's Flight SQL driver (Go) sends basic credentials
            // without it.
            let decoded = BASIC_BASE64
                .decode(rest)
                .map_err(|_| AuthProblem::MalformedHeader)?;
            let decoded = String::from_utf8(decoded).map_err(|_| AuthProblem::MalformedHeader)?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or(AuthProblem::MalformedHeader)?;
            return Ok(Credentials::Basic {
                user: user.to_string(),
                password: password.to_string(),
            });
        }
        Err(AuthProblem::MalformedHeader)
    }

    /// The `authorization` header value for these credentials.
    pub fn to_header(&self) -> String {
        match self {
            Credentials::Basic { user, password } => {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                format!("Basic {encoded}")
            }
            Credentials::Bearer(token) => format!("Bearer {token}"),
        }
    }
}

/// Why a request is not authenticated ([`crate::Error::Unauthenticated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthProblem {
    /// No credentials at all.
    #[error(
        "no credentials: this server has users. Authenticate with the Handshake \
         (pyarrow: client.authenticate_basic_token(user, password); flightcache: --user NAME) \
         and send its `authorization: Bearer TOKEN` header, or an API token (--token)"
    )]
    NoCredentials,
    /// An unknown user, or a wrong password: never said which.
    #[error("wrong user name or password")]
    WrongPassword,
    /// A bearer token the server does not know.
    #[error(
        "the bearer token is unknown: sign in again with the Handshake (pyarrow: \
         client.authenticate_basic_token(user, password); flightcache: --user NAME), or check \
         the API token"
    )]
    UnknownToken,
    /// A session token whose time is up, or whose user was removed or changed password.
    #[error(
        "the session token has expired (sessions last the server's --token-ttl, and end when \
         the user's password changes): sign in again with the Handshake"
    )]
    ExpiredToken,
    /// Too many sign-ins for one user name from one address wait for their turn.
    #[error(
        "too many sign-ins for this user name from this address are waiting for their turn: \
         they are checked one at a time, slower after each wrong password; try again shortly"
    )]
    TooManySignIns,
    /// The user name took all the wrong passwords it takes for now, from all addresses
    /// together; the password was not checked.
    #[error(
        "too many wrong passwords for this user name lately, from anywhere: its password was \
         not checked; try again in {retry_after_secs} s (sign-ins from an address the user \
         signed in from before are still checked)"
    )]
    UserGuessesUsedUp {
        /// When a guess comes back, in seconds.
        retry_after_secs: u64,
    },

    /// An `authorization` header that is neither basic nor bearer credentials.
    #[error("the authorization header is neither `Basic base64(user:password)` nor `Bearer TOKEN`")]
    MalformedHeader,
    /// Basic credentials on a call other than the Handshake.
    #[error(
        "basic credentials are taken by the Handshake only: authenticate with it, then send \
         the bearer token it answers"
    )]
    BasicOutsideHandshake,
    /// A Handshake without basic credentials.
    #[error(
        "the Handshake takes HTTP basic credentials in the authorization header \
         (pyarrow: client.authenticate_basic_token(user, password))"
    )]
    HandshakeWithoutBasic,
}

impl AuthProblem {
    /// Whether the client presented credentials that turned out wrong (a password or a token
    /// guess), as opposed to none or a malformed header. Only guesses are counted against the
    /// peer and slowed down.
    pub fn is_guess(&self) -> bool {
        matches!(self, AuthProblem::WrongPassword | AuthProblem::UnknownToken)
    }
}

/// What the `whoami` action answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The caller's user name; `null` on a server without users.
    pub user: Option<String>,
    /// How the caller proved it: `password`, `token`, `certificate`, or `open`.
    pub proof: String,
    /// Key patterns the caller may read.
    pub read: Vec<String>,
    /// Key patterns the caller may write.
    pub write: Vec<String>,
    /// Whether the caller may clear the cache and read its statistics.
    pub admin: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_read_with_or_without_padding() {
        // "alice:pw" is 8 bytes: one `=` of padding, which ADBC's Go driver leaves out.
        for header in [&b"Basic YWxpY2U6cHc="[..], b"Basic YWxpY2U6cHc"] {
            assert_eq!(
                Credentials::from_header(header),
                Ok(Credentials::Basic {
                    user: "alice".into(),
                    password: "pw".into()
                })
            );
        }
    }

    #[test]
    fn authorization_headers_round_trip() {
        for credentials in [
            Credentials::Basic {
                user: "alice".into(),
                password: "p:a:ss".into(),
            },
            Credentials::Bearer("fct_abc".into()),
        ] {
            let header = credentials.to_header();
            assert_eq!(Credentials::from_header(header.as_bytes()), Ok(credentials));
        }
        assert_eq!(
            Credentials::from_header(b"basic YWxpY2U6cHc="),
            Ok(Credentials::Basic {
                user: "alice".into(),
                password: "pw".into()
            })
        );
        for bad in [
            &b"Bearer"[..],
            b"Token x",
            b"Basic !!!",
            b"Basic YWxpY2U=",
            b"\xff",
        ] {
            assert_eq!(
                Credentials::from_header(bad),
                Err(AuthProblem::MalformedHeader),
                "{bad:?}"
            );
        }
        let debug = format!("{:?}", Credentials::Bearer("secret".into()));
        assert!(!debug.contains("secret"));
    }
}
