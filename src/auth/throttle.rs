//! Slowing guessers down, without locking real users out.
//!
//! - **Token guesses** (a bearer token the server does not know) count against the peer's
//!   address: its failed authentications are answered ever more slowly.
//! - **Password guesses** count against the user name and the address together, so a streak of
//!   wrong passwords from one address for one user name never slows another user's sign-in
//!   from that address (many users share an address behind NAT or a proxy). One user name's
//!   passwords from one address are checked one at a time, each after the delay of the last
//!   wrong one, so guesses sent in parallel go no faster than guesses sent in turn.
//! - **Every user name** takes at most [`GUESS_BURST`] wrong passwords, then one per
//!   [`GUESS_REFILL`], from all addresses together: spreading guesses over many addresses
//!   does not make them faster. Past it, sign-ins for the name are refused without a check,
//!   except from an address the user signed in from within [`KNOWN_FOR`], so an attacker
//!   cannot lock the real user out from where the user signs in.
//!
//! - **One address** has at most [`MAX_SIGN_INS_PER_ADDRESS`] sign-ins in line at once for
//!   user names that never signed in from it, so guessing many names from one address cannot
//!   take every password check; a user's sign-in from an address it signed in from before is
//!   never refused for that.
//!
//! Records of failures are forgotten [`FAILURES_FORGOTTEN_AFTER`] after the last, and each
//! table holds at most [`MAX_RECORDS`] (the quietest goes first). User names are kept as
//! digests: a long made-up name costs no more than a short one. The guess budgets are a fixed
//! table of [`GUESS_BUCKETS`] buckets, a user name's chosen by its digest: nothing can be
//! evicted to give a name a fresh budget, and a name sharing a bucket gains nothing.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::auth::users::token_digest;
use crate::error::{Error, Result};
use crate::protocol::credentials::AuthProblem;

/// The first failure is answered after this; each further one doubles it, up to
/// [`MAX_FAILURE_DELAY`].
const FIRST_FAILURE_DELAY: Duration = Duration::from_millis(100);
/// The longest a failed authentication waits for its answer.
pub const MAX_FAILURE_DELAY: Duration = Duration::from_secs(5);
/// A record of failures is forgotten this long after its last failure.
pub const FAILURES_FORGOTTEN_AFTER: Duration = Duration::from_secs(600);
/// Records each table keeps at most; past it, the quietest is forgotten.
pub const MAX_RECORDS: usize = 65_536;
/// Sign-ins for one user name from one address that may be in line at once (one checked,
/// the others waiting); more are refused at once.
pub const MAX_WAITING_SIGN_INS: usize = 8;
/// Wrong passwords a user name takes at once from all addresses together, before
/// [`GUESS_REFILL`] paces them.
pub const GUESS_BURST: u32 = 20;
/// Past [`GUESS_BURST`], a user name takes one more wrong password per this long: 20 a
/// minute, from however many addresses.
pub const GUESS_REFILL: Duration = Duration::from_secs(3);
/// Buckets of guesses: user names share them by their digest.
pub const GUESS_BUCKETS: usize = 16_384;
/// Sign-ins that may be in line at once from one address for user names that never signed
/// in from it, across names (see [`MAX_WAITING_SIGN_INS`] for one name).
pub const MAX_SIGN_INS_PER_ADDRESS: usize = 32;
/// An address a user signed in from is known for this long: sign-ins for the user from it
/// are checked even while the user name's guesses are used up.
pub const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// A user name, as a digest.
type Name = [u8; 32];

/// Who failed authentications are counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Guesser {
    /// Whoever sends tokens from this address (an IPv4 address, or an IPv6 /64 network).
    Address(IpAddr),
    /// Whoever sends passwords for this user name from this address.
    SignIn(Name, IpAddr),
}

impl Guesser {
    /// The guesser of tokens from `peer`.
    pub fn address(peer: IpAddr) -> Self {
        Guesser::Address(failing_address(peer))
    }

    /// The guesser of `user`'s password from `peer`.
    pub fn sign_in(user: &str, peer: IpAddr) -> Self {
        Guesser::SignIn(token_digest(user), failing_address(peer))
    }
}

/// The address failures are counted against: an IPv4 address, or an IPv6 address's /64
/// network (one host usually holds a whole /64).
pub fn failing_address(peer: IpAddr) -> IpAddr {
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

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// No sign-in of this guesser is checked before this.
    blocked_until: Instant,
}

/// A user name's wrong passwords left: a token bucket of [`GUESS_BURST`], refilled one per
/// [`GUESS_REFILL`].
#[derive(Debug, Clone, Copy)]
struct Guesses {
    left: u32,
    /// When the bucket was last refilled up to.
    refilled: Instant,
}

impl Guesses {
    fn full(now: Instant) -> Self {
        Self {
            left: GUESS_BURST,
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let periods =
            now.saturating_duration_since(self.refilled).as_nanos() / GUESS_REFILL.as_nanos();
        let periods = u32::try_from(periods).unwrap_or(u32::MAX);
        if self.left.saturating_add(periods) >= GUESS_BURST {
            *self = Self::full(now);
        } else {
            self.left += periods;
            self.refilled += GUESS_REFILL * periods;
        }
    }

    /// When the next guess comes back.
    fn next_at(&self) -> Instant {
        self.refilled + GUESS_REFILL
    }
}

/// One user name's sign-ins from one address: how many are in line, and the lock the one
/// being checked holds.
#[derive(Debug, Default)]
struct Line {
    in_line: usize,
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// The server's record of failed authentications and sign-ins in progress.
#[derive(Debug)]
pub struct Throttle {
    failures: Mutex<HashMap<Guesser, Failures>>,
    /// The sign-ins of each user name and address in progress or waiting.
    lines: Mutex<HashMap<(Name, IpAddr), Line>>,
    /// The wrong passwords left in each bucket of user names.
    guesses: Mutex<Vec<Guesses>>,
    /// Sign-ins in line per address for user names not known there.
    strangers_in_line: Mutex<HashMap<IpAddr, usize>>,
    /// When each user last signed in from each address.
    known: Mutex<HashMap<(Name, IpAddr), Instant>>,
    /// [`MAX_RECORDS`] (smaller in tests).
    pub(crate) max_records: usize,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            failures: Mutex::default(),
            lines: Mutex::default(),
            guesses: Mutex::new(vec![Guesses::full(Instant::now()); GUESS_BUCKETS]),
            strangers_in_line: Mutex::default(),
            known: Mutex::default(),
            max_records: MAX_RECORDS,
        }
    }
}

/// Lock `mutex`; nothing panics while one of these is held, so a poisoned one is consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Make room in `map` for `key` if it is new: forget records `stale` says are over, then,
/// if still full, the one `age` says is the oldest.
fn make_room<K: Eq + Hash + Copy, V>(
    map: &mut HashMap<K, V>,
    key: &K,
    max: usize,
    stale: impl Fn(&V) -> bool,
    age: impl Fn(&V) -> Instant,
) {
    if map.contains_key(key) || map.len() < max {
        return;
    }
    map.retain(|_, value| !stale(value));
    if map.len() >= max
        && let Some(oldest) = map.iter().min_by_key(|(_, v)| age(v)).map(|(k, _)| *k)
    {
        map.remove(&oldest);
    }
}

impl Throttle {
    /// Record a failed authentication of `guesser`: its next answers wait longer.
    pub fn record_failure(&self, guesser: Guesser) {
        let now = Instant::now();
        let mut failures = lock(&self.failures);
        make_room(
            &mut failures,
            &guesser,
            self.max_records,
            |f| now.duration_since(f.last) >= FAILURES_FORGOTTEN_AFTER,
            |f| f.last,
        );
        let entry = failures.entry(guesser).or_insert(Failures {
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

    /// How long to wait before answering `guesser`'s failed authentication: after its first
    /// failure 100 ms, after each further one (within 10 minutes) twice as long as before, up
    /// to 5 s. A guesser that never failed is answered at once. A successful sign-in does not
    /// reset the count (an attacker could reset it with an account of its own).
    pub fn delay(&self, guesser: Guesser) -> Duration {
        let now = Instant::now();
        lock(&self.failures)
            .get(&guesser)
            .filter(|f| now.duration_since(f.last) < FAILURES_FORGOTTEN_AFTER)
            .map_or(Duration::ZERO, |f| delay_after(f.count))
    }

    /// Wait for the turn of `user`'s sign-in from `peer`: one user name's passwords from one
    /// address are checked one at a time, each after the delay of the last wrong one; then
    /// take one of the user name's guesses.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] at once if [`MAX_WAITING_SIGN_INS`] sign-ins of the user
    /// name from the address are in line already; and once its turn comes if the user name
    /// has no wrong passwords left and the user never signed in from the address.
    pub async fn sign_in_turn(
        self: &Arc<Self>,
        user: &str,
        peer: Option<IpAddr>,
    ) -> Result<SignInTurn> {
        let name = token_digest(user);
        let address = peer.map(failing_address);
        // Made before the first await, so that its drop cleans up whenever the caller goes.
        let mut turn = SignInTurn {
            throttle: Arc::clone(self),
            name,
            address,
            in_line: false,
            stranger_in_line: false,
            held: None,
            guess_taken: false,
        };
        let known = self.known(name, address);
        if let Some(address) = address {
            let queue = {
                let mut lines = lock(&self.lines);
                let full = |line: &Line| line.in_line >= MAX_WAITING_SIGN_INS;
                if lines.get(&(name, address)).is_some_and(full) {
                    return Err(Error::Unauthenticated {
                        problem: AuthProblem::TooManySignIns,
                    });
                }
                if !known {
                    let mut strangers = lock(&self.strangers_in_line);
                    let in_line = strangers.entry(address).or_default();
                    if *in_line >= MAX_SIGN_INS_PER_ADDRESS {
                        return Err(Error::Unauthenticated {
                            problem: AuthProblem::TooManySignIns,
                        });
                    }
                    *in_line += 1;
                    turn.stranger_in_line = true;
                }
                let line = lines.entry((name, address)).or_default();
                line.in_line += 1;
                turn.in_line = true;
                Arc::clone(&line.turn)
            };
            turn.held = Some(queue.lock_owned().await);
            let blocked_until = lock(&self.failures)
                .get(&Guesser::SignIn(name, address))
                .map(|f| f.blocked_until);
            if let Some(blocked_until) = blocked_until {
                tokio::time::sleep_until(blocked_until).await;
            }
        }
        turn.guess_taken = self.take_guess(name, known)?;
        Ok(turn)
    }

    /// Whether the user `name` signed in from `address` within [`KNOWN_FOR`].
    fn known(&self, name: Name, address: Option<IpAddr>) -> bool {
        let now = Instant::now();
        address.is_some_and(|address| {
            lock(&self.known)
                .get(&(name, address))
                .is_some_and(|at| now.duration_since(*at) < KNOWN_FOR)
        })
    }

    /// Take one of `name`'s guesses; whether one was taken (none is needed from an address
    /// the user signed in from, `known`, once they are used up).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] if the user name has none left.
    fn take_guess(&self, name: Name, known: bool) -> Result<bool> {
        let now = Instant::now();
        let mut guesses = lock(&self.guesses);
        let left = &mut guesses[bucket(name)];
        left.refill(now);
        if left.left > 0 {
            left.left -= 1;
            return Ok(true);
        }
        if known {
            return Ok(false);
        }
        Err(Error::Unauthenticated {
            problem: AuthProblem::UserGuessesUsedUp {
                retry_after_secs: left.next_at().saturating_duration_since(now).as_secs() + 1,
            },
        })
    }
}

/// The bucket of guesses of the user name `name`.
fn bucket(name: Name) -> usize {
    let [a, b, c, d, ..] = name;
    u32::from_le_bytes([a, b, c, d]) as usize % GUESS_BUCKETS
}

/// A sign-in's turn to have its password checked. [`fail`](Self::fail) or
/// [`succeed`](Self::succeed) says how the check went. Dropping it, however early (a client
/// that hangs up while it waits), gives the turn up and forgets a line nobody waits in.
#[derive(Debug)]
pub struct SignInTurn {
    throttle: Arc<Throttle>,
    name: Name,
    address: Option<IpAddr>,
    /// Whether this turn is counted in its line.
    in_line: bool,
    /// Whether it is counted among its address's sign-ins for names not known there.
    stranger_in_line: bool,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// Whether one of the user name's guesses was taken for this sign-in.
    guess_taken: bool,
}

impl SignInTurn {
    /// The password was wrong: count it against the user name and address, within this turn.
    pub fn fail(&self) {
        if let Some(address) = self.address {
            self.throttle
                .record_failure(Guesser::SignIn(self.name, address));
        }
    }

    /// The password was right: the guess taken is given back, and the address is known for
    /// the user from now on.
    pub fn succeed(&self) {
        let now = Instant::now();
        if self.guess_taken {
            let left = &mut lock(&self.throttle.guesses)[bucket(self.name)];
            left.left = (left.left + 1).min(GUESS_BURST);
        }
        if let Some(address) = self.address {
            let mut known = lock(&self.throttle.known);
            let key = (self.name, address);
            make_room(
                &mut known,
                &key,
                self.throttle.max_records,
                |at| now.duration_since(*at) >= KNOWN_FOR,
                |at| *at,
            );
            known.insert(key, now);
        }
    }
}

impl Drop for SignInTurn {
    fn drop(&mut self) {
        self.held.take();
        let Some(address) = self.address else {
            return;
        };
        if self.stranger_in_line {
            let mut strangers = lock(&self.throttle.strangers_in_line);
            if let Some(in_line) = strangers.get_mut(&address) {
                *in_line -= 1;
                if *in_line == 0 {
                    strangers.remove(&address);
                }
            }
        }
        if !self.in_line {
            return;
        }
        let mut lines = lock(&self.throttle.lines);
        let key = (self.name, address);
        if let Some(line) = lines.get_mut(&key) {
            line.in_line -= 1;
            if line.in_line == 0 {
                lines.remove(&key); // nobody else in line: forget it
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn failures_count_against_ipv4_addresses_and_ipv6_networks() {
        assert_eq!(
            failing_address(ip("2001:db8:1:2:aaaa::1")),
            failing_address(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            failing_address(ip("2001:db8:1:2::1")),
            failing_address(ip("2001:db8:1:3::1"))
        );
        assert_eq!(failing_address(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(failing_address(ip("10.0.0.1")), ip("10.0.0.1"));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_slow_down_exponentially_per_guesser_and_are_forgotten() {
        let throttle = Throttle::default();
        let peer = Guesser::address(ip("10.0.0.1"));
        let delays: Vec<_> = (0..8)
            .map(|_| {
                throttle.record_failure(peer);
                throttle.delay(peer)
            })
            .collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[7], MAX_FAILURE_DELAY);
        let other = Guesser::address(ip("10.0.0.2"));
        assert_eq!(
            throttle.delay(other),
            Duration::ZERO,
            "a clean address waits not"
        );
        // Passwords from the same address for another user name are another guesser.
        let alice_there = Guesser::sign_in("alice", ip("10.0.0.1"));
        assert_eq!(throttle.delay(alice_there), Duration::ZERO);
        throttle.record_failure(alice_there);
        assert_eq!(throttle.delay(alice_there), Duration::from_millis(100));
        assert_eq!(
            throttle.delay(Guesser::sign_in("bob", ip("10.0.0.1"))),
            Duration::ZERO
        );
        tokio::time::advance(FAILURES_FORGOTTEN_AFTER).await;
        assert_eq!(throttle.delay(peer), Duration::ZERO);
        throttle.record_failure(peer);
        assert_eq!(throttle.delay(peer), Duration::from_millis(100));
    }

    impl Throttle {
        /// The turn of made-up user name number `n` from `peer`.
        async fn sign_in_turn_for_test(
            self: &Arc<Self>,
            n: usize,
            peer: Option<IpAddr>,
        ) -> Result<SignInTurn> {
            self.sign_in_turn(&format!("mallory-{n}"), peer).await
        }
    }

    #[test]
    fn records_are_bounded() {
        let throttle = Throttle {
            max_records: 2,
            ..Throttle::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            for last in 1..=3u8 {
                throttle.record_failure(Guesser::address(IpAddr::from([10, 0, 0, last])));
                tokio::time::advance(Duration::from_secs(1)).await;
            }
        });
        let failures = lock(&throttle.failures);
        assert_eq!(failures.len(), 2);
        assert!(
            !failures.contains_key(&Guesser::address(ip("10.0.0.1"))),
            "the quietest went"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_user_names_sign_ins_from_an_address_go_one_at_a_time_and_others_do_not_wait() {
        let throttle = Arc::new(Throttle::default());
        let peer = Some(ip("10.0.0.1"));
        let first = throttle.sign_in_turn("alice", peer).await.unwrap();
        let start = Instant::now();
        let second = tokio::spawn({
            let throttle = Arc::clone(&throttle);
            async move {
                let _turn = throttle.sign_in_turn("alice", peer).await.unwrap();
                Instant::now()
            }
        });
        // Another user from the same address has its turn at once.
        let bob = throttle.sign_in_turn("bob", peer).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        drop(bob);
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
            lock(&throttle.lines).is_empty(),
            "nothing kept once nobody waits"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sign_ins_in_line_are_bounded_and_leave_nothing_when_given_up() {
        let throttle = Arc::new(Throttle::default());
        let peer = Some(ip("10.0.0.1"));
        let first = throttle.sign_in_turn("alice", peer).await.unwrap();
        let waiting: Vec<_> = (1..MAX_WAITING_SIGN_INS)
            .map(|_| {
                let throttle = Arc::clone(&throttle);
                tokio::spawn(async move { throttle.sign_in_turn("alice", peer).await.map(drop) })
            })
            .collect();
        tokio::task::yield_now().await;
        let refused = throttle.sign_in_turn("alice", peer).await.unwrap_err();
        assert!(
            refused.to_string().contains("too many sign-ins"),
            "{refused}"
        );
        assert!(
            throttle.sign_in_turn("bob", peer).await.is_ok(),
            "another user name's line is its own"
        );
        for task in &waiting {
            task.abort();
        }
        for task in waiting {
            assert!(task.await.unwrap_err().is_cancelled());
        }
        drop(first);
        assert!(lock(&throttle.lines).is_empty());
        // And one that hangs up while it waits out a failure's delay.
        throttle.record_failure(Guesser::sign_in("alice", ip("10.0.0.1")));
        let delayed = tokio::spawn({
            let throttle = Arc::clone(&throttle);
            async move { throttle.sign_in_turn("alice", peer).await.map(drop) }
        });
        tokio::task::yield_now().await;
        delayed.abort();
        assert!(delayed.await.unwrap_err().is_cancelled());
        assert!(lock(&throttle.lines).is_empty());
    }

    /// One address guessing many user names holds at most [`MAX_SIGN_INS_PER_ADDRESS`] sign-ins
    /// in line; a user who signed in from there before is not refused for it.
    #[tokio::test(start_paused = true)]
    async fn one_address_guessing_many_names_holds_a_bounded_line() {
        let throttle = Arc::new(Throttle::default());
        let peer = Some(ip("10.0.0.1"));
        throttle
            .sign_in_turn("alice", peer)
            .await
            .unwrap()
            .succeed();
        let held: Vec<_> = futures::future::join_all(
            (0..MAX_SIGN_INS_PER_ADDRESS).map(|n| throttle.sign_in_turn_for_test(n, peer)),
        )
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
        let refused = throttle.sign_in_turn("mallory-0", peer).await;
        assert!(refused.is_err(), "a name in line already waits its turn");
        let refused = throttle
            .sign_in_turn("someone-new", peer)
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("too many sign-ins"),
            "{refused}"
        );
        assert!(
            throttle.sign_in_turn("alice", peer).await.is_ok(),
            "known here"
        );
        drop(held);
        assert!(lock(&throttle.strangers_in_line).is_empty());
        assert!(
            lock(&throttle.lines).is_empty(),
            "no empty lines left behind"
        );
    }

    /// Guesses from many addresses at one user name: after [`GUESS_BURST`] wrong ones, one
    /// per [`GUESS_REFILL`] is checked and the rest are refused unchecked, while the user's
    /// own address is still checked; right passwords cost no guess.
    #[tokio::test(start_paused = true)]
    async fn a_user_name_takes_only_so_many_wrong_passwords_from_all_addresses() {
        let throttle = Arc::new(Throttle::default());
        let home = Some(ip("192.168.1.7"));
        for _ in 0..3 {
            throttle
                .sign_in_turn("alice", home)
                .await
                .unwrap()
                .succeed();
        }
        let mut checked = 0;
        let mut refused = 0;
        let start = Instant::now();
        // Each guess from an address of its own: no address has a streak to wait out.
        for n in 0..200u32 {
            let peer = Some(IpAddr::from((0x0a00_0000 + n).to_be_bytes()));
            match throttle.sign_in_turn("alice", peer).await {
                Ok(turn) => {
                    turn.fail();
                    checked += 1;
                }
                Err(err) => {
                    assert!(err.to_string().contains("try again in"), "{err}");
                    refused += 1;
                }
            }
            tokio::time::advance(Duration::from_millis(150)).await; // 30 s in all
        }
        let minutes = start.elapsed().as_secs_f64() / 60.0;
        let allowed = GUESS_BURST as f64 + minutes * 60.0 / GUESS_REFILL.as_secs_f64();
        assert!(
            f64::from(checked) <= allowed + 1.0,
            "{checked} checked in {minutes} min"
        );
        assert!(refused > 150, "{refused}");
        // With the guesses used up, an address the user never signed in from is refused,
        // and the user's own address is still checked; a right password costs no guess.
        let stranger = Some(ip("172.16.0.1"));
        throttle
            .sign_in_turn("alice", stranger)
            .await
            .map(|turn| turn.fail())
            .ok();
        assert!(throttle.sign_in_turn("alice", stranger).await.is_err());
        let turn = throttle.sign_in_turn("alice", home).await.unwrap();
        assert!(!turn.guess_taken, "checked without a guess");
        turn.succeed();
        // Another user name has guesses of its own.
        assert!(
            throttle
                .sign_in_turn("bob", Some(ip("10.9.9.9")))
                .await
                .is_ok()
        );
        // And the stranger's address waits for the refill.
        tokio::time::advance(GUESS_REFILL).await;
        assert!(throttle.sign_in_turn("alice", stranger).await.is_ok());
    }
}
