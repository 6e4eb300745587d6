//! Who a request comes from, and what it may do: users and their rights ([`users`]), session
//! tokens issued by the Handshake, static API tokens, client certificates, and the slowdown of
//! failed authentications.
//!
//! A server without users is open: every caller has every right (protected mode keeps such a
//! server on loopback, see `flightcache serve`). A server with users answers a request without
//! valid credentials with UNAUTHENTICATED, and one whose user lacks the right with
//! PERMISSION_DENIED, in the door of its RPC (see `server::service`, where each request's
//! caller is judged once).
//!
//! - [`users`]: the users file, key patterns, password hashes and token digests.
//! - `throttle` (crate-private): failed authentications answered ever more slowly, per address for tokens
//!   and per user name and address for passwords, and a cap on each user name's wrong
//!   passwords from everywhere.

pub(crate) mod throttle;
pub mod users;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use throttle::{Guesser, SignInTurn, Throttle};

use tokio::time::Instant;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::protocol::credentials::{AuthProblem, Credentials};
use crate::protocol::key::TableKey;
use users::{Right, Rights, Users, random_token, token_digest};

/// How long a session token from the Handshake is valid by default: one hour.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Sessions one user may hold at once; a new sign-in past it ends the user's oldest session.
const MAX_SESSIONS_PER_USER: usize = 1024;
/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proof {
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
pub(crate) struct Caller {
    /// The user's name; `None` on a server without users.
    pub user: Option<String>,
    /// What it may do.
    pub rights: Arc<Rights>,
    /// How it proved who it is.
    pub proof: Proof,
}

impl Caller {
    /// The caller of a server without users: every right (one shared set of them, so that
    /// an open server allocates nothing per request for it).
    pub fn open() -> Self {
        static ALL: std::sync::OnceLock<Arc<Rights>> = std::sync::OnceLock::new();
        Self {
            user: None,
            rights: Arc::clone(ALL.get_or_init(|| Arc::new(Rights::all()))),
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
pub(crate) struct Authenticator {
    users: RwLock<Arc<Users>>,
    /// Where the users were read from, to read them again (SIGHUP).
    users_file: Option<PathBuf>,
    token_ttl: Duration,
    /// Session tokens by digest.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    /// Failed authentications, and sign-ins in progress.
    throttle: Arc<Throttle>,
    /// [`MAX_SESSIONS_PER_USER`] (smaller in tests).
    max_sessions_per_user: usize,
    /// What sessions' lifetimes are measured on.
    clock: Clock,
}

#[derive(Debug, Clone)]
struct Session {
    user: String,
    /// The password hash the session was opened with: a changed password ends it.
    password_hash: String,
    expires: Instant,
}

impl Authenticator {
    /// An authenticator for `users` (read from `users_file`, if given, for reloads), whose
    /// session tokens last `token_ttl` on `clock`.
    pub fn new(
        users: Users,
        users_file: Option<PathBuf>,
        token_ttl: Duration,
        clock: Clock,
    ) -> Self {
        Self {
            users: RwLock::new(Arc::new(users)),
            users_file,
            token_ttl,
            sessions: Mutex::new(HashMap::new()),
            throttle: Arc::default(),
            max_sessions_per_user: MAX_SESSIONS_PER_USER,
            clock,
        }
    }

    fn users(&self) -> Arc<Users> {
        Arc::clone(&self.users.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Read the users file again; existing sessions keep working for users who remain with
    /// the same password, with their new rights.
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
        let Some(password_hash) = users
            .verify_password(user, password)
            .and_then(|user| user.password_hash())
            .map(str::to_string)
        else {
            return Err(Error::Unauthenticated {
                problem: AuthProblem::WrongPassword,
            });
        };
        let token = random_token();
        let now = self.clock.now();
        let session = Session {
            user: user.to_string(),
            password_hash,
            expires: now + self.token_ttl,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, s| s.expires > now); // forget expired sessions as new ones come
        let mut own: Vec<_> = sessions
            .iter()
            .filter(|(_, s)| s.user == user)
            .map(|(digest, s)| (s.expires, *digest))
            .collect();
        if own.len() >= self.max_sessions_per_user {
            own.sort_unstable();
            for (_, digest) in &own[..=own.len() - self.max_sessions_per_user] {
                sessions.remove(digest);
            }
        }
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
                let session = self
                    .sessions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&token_digest(&token))
                    .cloned();
                if let Some(session) = session {
                    if session.expires <= self.clock.now() {
                        return unauthenticated(AuthProblem::ExpiredToken);
                    }
                    // A user removed from the file, or whose password changed, is signed out.
                    return match users.get(&session.user) {
                        Some(user) if user.password_hash() == Some(&session.password_hash) => {
                            Ok(caller(user, Proof::Password))
                        }
                        _ => unauthenticated(AuthProblem::ExpiredToken),
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

    /// Wait for the turn of `user`'s sign-in from `peer` (see [`throttle`]).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] if too many sign-ins of the user name from the address
    /// are in line, or the user name's wrong passwords are used up.
    pub async fn sign_in_turn(&self, user: &str, peer: Option<IpAddr>) -> Result<SignInTurn> {
        self.throttle.sign_in_turn(user, peer).await
    }

    /// Record a failed authentication that was a guess (see [`AuthProblem::is_guess`]) by
    /// `user` (for passwords) from `peer`, unless it was counted already (wrong passwords are,
    /// within their turn); how long its answer waits (see [`Throttle::delay`]). Any other
    /// failure waits as long as the address's token guesses do.
    pub fn count_failure(
        &self,
        problem: &AuthProblem,
        user: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Duration {
        let Some(peer) = peer else {
            return Duration::ZERO;
        };
        let guesser = match (problem, user) {
            (AuthProblem::WrongPassword, Some(user)) => Guesser::sign_in(user, peer),
            _ => Guesser::address(peer),
        };
        if *problem == AuthProblem::UnknownToken {
            self.throttle.record_failure(guesser);
        }
        self.throttle.delay(guesser)
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
            Authenticator::new(users, None, Duration::from_secs(60), Clock::default()),
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
        assert!(expired.to_string().contains("has expired"), "{expired}");
    }

    #[tokio::test]
    async fn a_changed_password_or_a_removed_user_ends_sessions_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let user = |password: &str| {
            format!(
                "[users.alice]\npassword = \"{}\"\nread = [\"*\"]\n",
                hash_password(password).unwrap()
            )
        };
        let one = user("one");
        std::fs::write(&path, &one).unwrap();
        let auth = Authenticator::new(
            Users::load(&path).unwrap(),
            Some(path.clone()),
            Duration::from_secs(60),
            Clock::default(),
        );
        let token = auth.log_in("alice", "one").unwrap();
        std::fs::write(&path, one + "write = [\"*\"]\n").unwrap();
        auth.reload().unwrap();
        let caller = auth.authenticate(bearer(&token), None).unwrap();
        assert!(
            caller.may(Right::Write, &TableKey::try_new("k").unwrap()),
            "new rights"
        );
        std::fs::write(&path, user("two")).unwrap();
        auth.reload().unwrap();
        let err = auth.authenticate(bearer(&token), None).unwrap_err();
        assert!(err.to_string().contains("has expired"), "{err}");
        let token = auth.log_in("alice", "two").unwrap();
        // A file that does not parse leaves the users in force.
        std::fs::write(&path, "this is not toml [").unwrap();
        assert!(auth.reload().is_err());
        assert!(auth.authenticate(bearer(&token), None).is_ok());
        std::fs::write(&path, "[users.bob]\ntokens = []\n").unwrap();
        auth.reload().unwrap();
        assert!(auth.authenticate(bearer(&token), None).is_err(), "removed");
    }

    #[test]
    fn sessions_are_bounded() {
        let (mut auth, _) = authenticator();
        auth.max_sessions_per_user = 2;
        let tokens: Vec<_> = (0..3)
            .map(|_| auth.log_in("alice", "pw").unwrap())
            .collect();
        assert!(
            auth.authenticate(bearer(&tokens[0]), None).is_err(),
            "the oldest ended"
        );
        assert!(auth.authenticate(bearer(&tokens[1]), None).is_ok());
        assert!(auth.authenticate(bearer(&tokens[2]), None).is_ok());
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
}
