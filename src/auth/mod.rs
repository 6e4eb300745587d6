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
/// Addresses whose failures are remembered at most; past it, the quietest is forgotten.
const MAX_FAILING_ADDRESSES: usize = 65_536;
/// Sessions one user may hold at once; a new sign-in past it ends the user's oldest session.
const MAX_SESSIONS_PER_USER: usize = 1024;
/// Sign-ins from one address that may be in line at once (one checked, the others waiting);
/// more are refused at once, so a guesser cannot queue enough to lock the address's real
/// users out for long.
pub const MAX_WAITING_SIGN_INS: usize = 8;

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
pub struct Authenticator {
    users: RwLock<Arc<Users>>,
    /// Where the users were read from, to read them again (SIGHUP).
    users_file: Option<PathBuf>,
    token_ttl: Duration,
    /// Session tokens by digest.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    /// Failed authentications by peer address.
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// The turn of each address with sign-ins in progress or waiting: one address's
    /// passwords are checked one at a time (see [`Authenticator::sign_in_turn`]).
    turns: Mutex<HashMap<IpAddr, Line>>,
    /// [`MAX_SESSIONS_PER_USER`] and [`MAX_FAILING_ADDRESSES`] (smaller in tests).
    max_sessions_per_user: usize,
    max_failing_addresses: usize,
}

/// The sign-ins of one address: how many are in line, and the lock the one being checked
/// holds.
#[derive(Debug, Default)]
struct Line {
    in_line: usize,
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// An address's turn to have a password checked; [`fail`](Self::fail) records a wrong one
/// before the next sign-in from the address may start. Dropping it, however early (a client
/// that hangs up while it waits), gives the turn up and forgets an address nobody waits for.
#[derive(Debug)]
pub struct SignInTurn {
    auth: Arc<Authenticator>,
    address: Option<IpAddr>,
    /// Whether this turn is counted in its address's line.
    in_line: bool,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl SignInTurn {
    /// The password was wrong: count it against the address, within this turn.
    pub fn fail(&self) {
        self.auth.record_failure_of(self.address);
    }
}

impl Drop for SignInTurn {
    fn drop(&mut self) {
        self.held.take();
        let (Some(address), true) = (self.address, self.in_line) else {
            return;
        };
        let mut turns = self
            .auth
            .turns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(line) = turns.get_mut(&address) {
            line.in_line -= 1;
            if line.in_line == 0 {
                turns.remove(&address); // nobody else in line: forget the address
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Session {
    user: String,
    /// The password hash the session was opened with: a changed password ends it.
    password_hash: String,
    expires: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// No sign-in from the address is checked before this: guesses sent in parallel wait
    /// like guesses sent one after the other.
    blocked_until: Instant,
}

/// The address failures are counted against: an IPv4 address, or an IPv6 address's /64
/// network (one host usually holds a whole /64).
fn failing_address(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
        v4 => v4,
    }
}

/// How long the `count`th failure in a row waits: 100 ms, doubling, up to 5 s.
fn delay_after(count: u32) -> Duration {
    match count {
        0 => Duration::ZERO,
        n => (FIRST_FAILURE_DELAY * 2u32.pow((n - 1).min(16))).min(MAX_FAILURE_DELAY),
    }
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
            turns: Mutex::new(HashMap::new()),
            max_sessions_per_user: MAX_SESSIONS_PER_USER,
            max_failing_addresses: MAX_FAILING_ADDRESSES,
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
        let now = Instant::now();
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
                    if session.expires <= Instant::now() {
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

    /// Wait for `peer`'s turn to have a password checked: sign-ins from one address are
    /// checked one at a time, each after the delay of the address's last wrong guess, so
    /// guesses sent in parallel are checked no faster than guesses sent in turn.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] at once if [`MAX_WAITING_SIGN_INS`] sign-ins from the
    /// address are already in line.
    pub async fn sign_in_turn(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<SignInTurn> {
        let address = peer.map(failing_address);
        // Made before the first await, so that its drop cleans up whenever the caller goes.
        let mut turn = SignInTurn {
            auth: Arc::clone(self),
            address,
            in_line: false,
            held: None,
        };
        let Some(address) = address else {
            return Ok(turn);
        };
        let queue = {
            let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
            let line = turns.entry(address).or_default();
            if line.in_line >= MAX_WAITING_SIGN_INS {
                return Err(Error::Unauthenticated {
                    problem: AuthProblem::TooManySignIns,
                });
            }
            line.in_line += 1;
            turn.in_line = true;
            Arc::clone(&line.turn)
        };
        turn.held = Some(queue.lock_owned().await);
        let blocked_until = self
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&address)
            .map(|f| f.blocked_until);
        if let Some(blocked_until) = blocked_until {
            tokio::time::sleep_until(blocked_until).await;
        }
        Ok(turn)
    }

    /// Record a wrong token from `peer`: its answer waits
    /// [`failure_delay`](Self::failure_delay). (Wrong passwords are recorded by
    /// [`SignInTurn::fail`].)
    pub fn record_failure(&self, peer: Option<IpAddr>) {
        self.record_failure_of(peer.map(failing_address));
    }

    fn record_failure_of(&self, address: Option<IpAddr>) {
        let Some(peer) = address else {
            return;
        };
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if !failures.contains_key(&peer) && failures.len() >= self.max_failing_addresses {
            failures.retain(|_, f| now.duration_since(f.last) < FAILURES_FORGOTTEN_AFTER);
            if failures.len() >= self.max_failing_addresses
                && let Some(quietest) = failures.iter().min_by_key(|(_, f)| f.last).map(|(a, _)| *a)
            {
                failures.remove(&quietest);
            }
        }
        let entry = failures.entry(peer).or_insert(Failures {
            count: 0,
            last: now,
            blocked_until: now,
        });
        if now.duration_since(entry.last) >= FAILURES_FORGOTTEN_AFTER {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        entry.blocked_until = now + delay_after(entry.count);
    }

    /// How long to wait before answering `peer`'s failed authentication: the first guess
    /// (see [`AuthProblem::is_guess`]) is answered after 100 ms, each further one (within 10
    /// minutes) after twice as long as the one before, up to 5 s. A peer that never guessed
    /// wrong is answered at once, even when it forgot its credentials. A successful sign-in
    /// does not reset the count (an attacker could reset it with an account of its own):
    /// failures are forgotten 10 minutes after the last one.
    pub fn failure_delay(&self, peer: Option<IpAddr>) -> Duration {
        let Some(peer) = peer.map(failing_address) else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&peer)
            .filter(|f| now.duration_since(f.last) < FAILURES_FORGOTTEN_AFTER)
            .map_or(Duration::ZERO, |f| delay_after(f.count))
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
    fn sessions_and_failing_addresses_are_bounded() {
        let (mut auth, _) = authenticator();
        auth.max_sessions_per_user = 2;
        auth.max_failing_addresses = 2;
        let tokens: Vec<_> = (0..3)
            .map(|_| auth.log_in("alice", "pw").unwrap())
            .collect();
        assert!(
            auth.authenticate(bearer(&tokens[0]), None).is_err(),
            "the oldest ended"
        );
        assert!(auth.authenticate(bearer(&tokens[1]), None).is_ok());
        assert!(auth.authenticate(bearer(&tokens[2]), None).is_ok());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            for last in 1..=3u8 {
                auth.record_failure(Some(IpAddr::from([10, 0, 0, last])));
                tokio::time::advance(Duration::from_secs(1)).await;
            }
        });
        let failures = auth.failures.lock().unwrap();
        assert_eq!(failures.len(), 2);
        assert!(
            !failures.contains_key(&IpAddr::from([10, 0, 0, 1])),
            "the quietest went"
        );
    }

    #[test]
    fn failures_count_against_ipv4_addresses_and_ipv6_networks() {
        let v6 = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(
            failing_address(v6("2001:db8:1:2:aaaa::1")),
            failing_address(v6("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            failing_address(v6("2001:db8:1:2::1")),
            failing_address(v6("2001:db8:1:3::1"))
        );
        assert_eq!(failing_address(v6("::ffff:10.0.0.1")), v6("10.0.0.1"));
        assert_eq!(failing_address(v6("10.0.0.1")), v6("10.0.0.1"));
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
    async fn failures_slow_down_exponentially_per_address_and_are_forgotten() {
        let (auth, _) = authenticator();
        let peer = Some("10.0.0.1".parse().unwrap());
        let delays: Vec<_> = (0..8)
            .map(|_| {
                auth.record_failure(peer);
                auth.failure_delay(peer)
            })
            .collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[7], MAX_FAILURE_DELAY);
        let other = Some("10.0.0.2".parse().unwrap());
        assert_eq!(
            auth.failure_delay(other),
            Duration::ZERO,
            "a clean address waits not"
        );
        auth.record_failure(other);
        assert_eq!(auth.failure_delay(other), Duration::from_millis(100));
        tokio::time::advance(FAILURES_FORGOTTEN_AFTER).await;
        assert_eq!(auth.failure_delay(peer), Duration::ZERO);
        auth.record_failure(peer);
        assert_eq!(auth.failure_delay(peer), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn one_address_signs_in_one_at_a_time_after_its_last_failures_delay() {
        let (auth, _) = authenticator();
        let auth = Arc::new(auth);
        let peer = Some("10.0.0.1".parse().unwrap());
        let first = auth.sign_in_turn(peer).await.unwrap();
        let start = Instant::now();
        let second = tokio::spawn({
            let auth = Arc::clone(&auth);
            async move {
                let _turn = auth.sign_in_turn(peer).await.unwrap();
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!second.is_finished(), "waits for the first turn");
        first.fail();
        drop(first);
        let started = second.await.unwrap();
        assert_eq!(
            started - start,
            Duration::from_secs(1) + Duration::from_millis(100)
        );
        assert!(
            auth.turns.lock().unwrap().is_empty(),
            "nothing kept once nobody waits"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sign_ins_in_line_are_bounded_and_leave_nothing_when_given_up() {
        let (auth, _) = authenticator();
        let auth = Arc::new(auth);
        let peer = Some("10.0.0.1".parse().unwrap());
        let first = auth.sign_in_turn(peer).await.unwrap();
        let waiting: Vec<_> = (1..MAX_WAITING_SIGN_INS)
            .map(|_| {
                let auth = Arc::clone(&auth);
                tokio::spawn(async move { auth.sign_in_turn(peer).await.map(drop) })
            })
            .collect();
        tokio::task::yield_now().await;
        let refused = auth.sign_in_turn(peer).await.unwrap_err();
        assert!(
            refused.to_string().contains("too many sign-ins"),
            "{refused}"
        );
        // Clients that hang up while they wait, then the one being checked.
        for task in &waiting {
            task.abort();
        }
        for task in waiting {
            assert!(task.await.unwrap_err().is_cancelled());
        }
        drop(first);
        assert!(auth.turns.lock().unwrap().is_empty());
        // And one that hangs up while it waits out a failure's delay.
        auth.record_failure(peer);
        let delayed = tokio::spawn({
            let auth = Arc::clone(&auth);
            async move { auth.sign_in_turn(peer).await.map(drop) }
        });
        tokio::task::yield_now().await;
        delayed.abort();
        assert!(delayed.await.unwrap_err().is_cancelled());
        assert!(auth.turns.lock().unwrap().is_empty());
    }
}
