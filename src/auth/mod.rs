//! Who a request comes from, and what it may do: users and their rights ([`users`]), session
//! tokens issued by the Handshake, static API tokens, client certificates, and the slowdown of
//! failed authentications.
//!
//! A server without users is open: every caller has every right (protected mode keeps such a
//! server on loopback, see `flightcache serve`). A server with users answers a request without
//! valid credentials with UNAUTHENTICATED, and one whose user lacks the right with
//! PERMISSION_DENIED, in the door of its RPC (see `server::service`).
//!
//! - [`users`]: the users file, key patterns, password hashes and token digests.

pub mod users;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::protocol::auth::{AuthProblem, Credentials};
use crate::protocol::key::TableKey;
use users::{Right, Rights, Users, random_token, token_digest};

/// How long a session token from the Handshake is valid by default: one hour.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The first failed authentication from an address is answered after this; each further one
/// doubles it, up to [`MAX_FAILURE_DELAY`].
const FIRST_FAILURE_DELAY: Duration = Duration::from_millis(100);
/// The longest a failed authentication waits for its answer.
const MAX_FAILURE_DELAY: Duration = Duration::from_secs(5);
/// An address's failures are forgotten this long after its last one.
const FAILURES_FORGOTTEN_AFTER: Duration = Duration::from_secs(600);

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The server has no users: nothing to prove.
    Open,
    /// A session token from the Handshake (user name and password).
    Password,
    /// A static API token from the users file.
    Token,
    /// A client certificate whose subject names the user.
    Certificate,
}

impl Proof {
    /// The name `whoami` reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Proof::Open => "open",
            Proof::Password => "password",
            Proof::Token => "token",
            Proof::Certificate => "certificate",
        }
    }
}

/// The authenticated sender of a request, and its rights.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user's name; `None` on a server without users.
    pub user: Option<String>,
    /// What it may do.
    pub rights: Arc<Rights>,
    /// How it proved who it is.
    pub proof: Proof,
}

impl Caller {
    /// The caller of a server without users: every right.
    pub fn open() -> Self {
        Self {
            user: None,
            rights: Arc::new(Rights::all()),
            proof: Proof::Open,
        }
    }

    /// Whether the caller may `right` `key`.
    pub fn may(&self, right: Right, key: &TableKey) -> bool {
        self.rights.allow(right, key.as_str())
    }

    /// Allow `right` over `key` (without a key: over at least one key, or over the cache for
    /// [`Right::Admin`]), or refuse it.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] if the caller lacks it: checked before the key is looked
    /// up, so a refusal says nothing about whether the key exists.
    pub fn require(&self, right: Right, key: Option<&TableKey>) -> Result<()> {
        let allowed = match key {
            Some(key) => self.may(right, key),
            None => self.rights.allow_any(right),
        };
        if allowed {
            return Ok(());
        }
        Err(Error::PermissionDenied {
            user: self.user.clone().unwrap_or_default(),
            right,
            key: key.cloned(),
            patterns: self.rights.patterns(right).join(", "),
        })
    }
}

/// The users a server knows, its sessions, and its record of failed authentications.
#[derive(Debug)]
pub struct Authenticator {
    users: RwLock<Arc<Users>>,
    /// Where the users were read from, to read them again (SIGHUP).
    users_file: Option<PathBuf>,
    token_ttl: Duration,
    /// Session tokens by digest.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    /// Failed authentications by peer address.
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone)]
struct Session {
    user: String,
    expires: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Authenticator {
    /// An authenticator for `users` (read from `users_file`, if given, for reloads), whose
    /// session tokens last `token_ttl`.
    pub fn new(users: Users, users_file: Option<PathBuf>, token_ttl: Duration) -> Self {
        Self {
            users: RwLock::new(Arc::new(users)),
            users_file,
            token_ttl,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// How long session tokens last.
    pub fn token_ttl(&self) -> Duration {
        self.token_ttl
    }

    fn users(&self) -> Arc<Users> {
        Arc::clone(&self.users.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Read the users file again; existing sessions keep working for users who remain, with
    /// their new rights.
    ///
    /// # Errors
    /// A message saying what is wrong with the file; the users in force stay as they were.
    pub fn reload(&self) -> std::result::Result<usize, String> {
        let Some(path) = &self.users_file else {
            return Err("the users were not read from a file".into());
        };
        let users = Users::load(path)?;
        let count = users.len();
        *self.users.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(users);
        Ok(count)
    }

    /// Check a user name and password (slow: argon2; call it off the runtime's threads) and
    /// open a session: its token.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for an unknown user or a wrong password, without saying
    /// which.
    pub fn log_in(&self, user: &str, password: &str) -> Result<String> {
        let users = self.users();
        let known = users.get(user);
        if !known.is_some_and(|u| u.verify_password(password)) {
            return Err(Error::Unauthenticated {
                problem: AuthProblem::WrongPassword,
            });
        }
        let token = random_token();
        let session = Session {
            user: user.to_string(),
            expires: Instant::now() + self.token_ttl,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now); // forget expired sessions as new ones come
        sessions.insert(token_digest(&token), session);
        Ok(token)
    }

    /// The caller presenting `credentials` (a bearer token, or none) over a connection whose
    /// client certificate names `certificate_user`, if any.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] without valid credentials.
    pub fn authenticate(
        &self,
        credentials: Option<Credentials>,
        certificate_user: Option<&str>,
    ) -> Result<Caller> {
        let users = self.users();
        let unauthenticated = |problem| Err(Error::Unauthenticated { problem });
        match credentials {
            Some(Credentials::Bearer(token)) => {
                let session_user = {
                    let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
                    sessions
                        .get(&token_digest(&token))
                        .filter(|s| s.expires > Instant::now())
                        .map(|s| s.user.clone())
                };
                if let Some(name) = session_user {
                    return match users.get(&name) {
                        Some(user) => Ok(caller(user, Proof::Password)),
                        None => unauthenticated(AuthProblem::UnknownToken),
                    };
                }
                match users.by_token(&token) {
                    Some(user) => Ok(caller(user, Proof::Token)),
                    None => unauthenticated(AuthProblem::UnknownToken),
                }
            }
            Some(Credentials::Basic { .. }) => unauthenticated(AuthProblem::BasicOutsideHandshake),
            None => match certificate_user.and_then(|name| users.get(name)) {
                Some(user) => Ok(caller(user, Proof::Certificate)),
                None => unauthenticated(AuthProblem::NoCredentials),
            },
        }
    }

    /// Record a failed authentication from `peer`; how long to wait before answering it.
    pub fn record_failure(&self, peer: Option<IpAddr>) -> Duration {
        let Some(peer) = peer else {
            return FIRST_FAILURE_DELAY;
        };
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.retain(|_, f| now.duration_since(f.last) < FAILURES_FORGOTTEN_AFTER);
        let entry = failures.entry(peer).or_insert(Failures {
            count: 0,
            last: now,
        });
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let doublings = entry.count.saturating_sub(1).min(16);
        (FIRST_FAILURE_DELAY * 2u32.pow(doublings)).min(MAX_FAILURE_DELAY)
    }

    /// How long to wait before answering `peer`'s failed authentication: the first guess
    /// (see [`AuthProblem::is_guess`]) is answered after 100 ms, each further one (within 10
    /// minutes) after twice as long as the one before, up to 5 s. A peer that never guessed
    /// wrong is answered at once, even when it forgot its credentials.
    pub fn failure_delay(&self, peer: Option<IpAddr>) -> Duration {
        let count = match peer {
            Some(peer) => self
                .failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&peer)
                .map_or(0, |f| f.count),
            None => 1,
        };
        match count {
            0 => Duration::ZERO,
            n => (FIRST_FAILURE_DELAY * 2u32.pow((n - 1).min(16))).min(MAX_FAILURE_DELAY),
        }
    }

    /// Forget `peer`'s failures once it authenticates.
    pub fn record_success(&self, peer: Option<IpAddr>) {
        if let Some(peer) = peer {
            self.failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&peer);
        }
    }
}

fn caller(user: &users::User, proof: Proof) -> Caller {
    Caller {
        user: Some(user.name.clone()),
        rights: Arc::new(user.rights.clone()),
        proof,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use users::{hash_password, new_token};

    fn authenticator() -> (Authenticator, String) {
        let (token, digest) = new_token();
        let text = format!(
            "[users.alice]\npassword = \"{}\"\nread = [\"a/*\"]\n[users.ci]\ntokens = [\"{digest}\"]\nread = [\"*\"]\n",
            hash_password("pw").unwrap()
        );
        let users = Users::parse(&text).unwrap();
        (
            Authenticator::new(users, None, Duration::from_secs(60)),
            token,
        )
    }

    fn bearer(token: &str) -> Option<Credentials> {
        Some(Credentials::Bearer(token.to_string()))
    }

    #[tokio::test(start_paused = true)]
    async fn session_tokens_work_until_they_expire() {
        let (auth, _) = authenticator();
        assert!(auth.log_in("alice", "wrong").is_err());
        assert!(auth.log_in("nobody", "pw").is_err());
        let token = auth.log_in("alice", "pw").unwrap();
        let caller = auth.authenticate(bearer(&token), None).unwrap();
        assert_eq!(
            (caller.user.as_deref(), caller.proof),
            (Some("alice"), Proof::Password)
        );
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(auth.authenticate(bearer(&token), None).is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        let expired = auth.authenticate(bearer(&token), None).unwrap_err();
        assert_eq!(expired.code(), tonic::Code::Unauthenticated);
        assert!(
            expired.to_string().contains("unknown or expired"),
            "{expired}"
        );
    }

    #[test]
    fn static_tokens_certificates_and_forgeries() {
        let (auth, token) = authenticator();
        let ci = auth.authenticate(bearer(&token), None).unwrap();
        assert_eq!((ci.user.as_deref(), ci.proof), (Some("ci"), Proof::Token));
        assert!(auth.authenticate(bearer("fct_forged"), None).is_err());
        assert!(auth.authenticate(None, None).is_err());
        let by_cert = auth.authenticate(None, Some("alice")).unwrap();
        assert_eq!(by_cert.proof, Proof::Certificate);
        assert!(auth.authenticate(None, Some("mallory")).is_err());
    }

    #[test]
    fn rights_refuse_with_permission_denied_naming_the_patterns() {
        let (auth, _) = authenticator();
        let alice = auth.authenticate(None, Some("alice")).unwrap();
        let key = TableKey::try_new("b/x").unwrap();
        assert!(
            alice
                .require(Right::Read, Some(&TableKey::try_new("a/x").unwrap()))
                .is_ok()
        );
        let err = alice.require(Right::Read, Some(&key)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        let message = err.to_string();
        assert!(
            message.contains("`alice`") && message.contains("a/*"),
            "{message}"
        );
        assert!(alice.require(Right::Admin, None).is_err());
        assert!(Caller::open().require(Right::Admin, None).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_slow_down_exponentially_per_address() {
        let (auth, _) = authenticator();
        let peer = Some("10.0.0.1".parse().unwrap());
        let delays: Vec<_> = (0..8).map(|_| auth.record_failure(peer)).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[7], MAX_FAILURE_DELAY);
        let other = Some("10.0.0.2".parse().unwrap());
        assert_eq!(auth.record_failure(other), Duration::from_millis(100));
        auth.record_success(peer);
        assert_eq!(auth.record_failure(peer), Duration::from_millis(100));
    }
}
