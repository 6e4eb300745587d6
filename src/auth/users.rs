//! The users file: who may connect, how they prove it, and what each may do.
//!
//! ```toml
//! # flightcache users file (serve --users FILE); reloaded on SIGHUP.
//! [users.alice]
//! password = "$argon2id$v=19$m=19456,t=2,p=1$..."   # flightcache hash-password
//! read = ["team-a/*", "shared/*"]                     # keys she may get, list, describe
//! write = ["team-a/*"]                                # keys she may put, drop, expire
//!
//! [users.ci]
//! tokens = ["sha256:9f86d081884c7d65..."]             # flightcache new-token
//! read = ["reports/*"]
//!
//! [users.ops]
//! password = "$argon2id$..."
//! read = ["*"]
//! write = ["*"]
//! admin = true                                        # clear and stats
//! ```
//!
//! Passwords are stored only as argon2id hashes (PHC strings); API tokens only as SHA-256
//! digests: a token is 256 random bits, which a fast digest protects as well as a slow hash,
//! and every request carrying one is checked without an argon2 computation. A key pattern is a
//! key in which `*` stands for any run of characters (`/` included): `team-a/*`, `*.daily`,
//! `*`. A client certificate whose subject's common name is a user's name authenticates as
//! that user.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The prefix of a token digest in the users file.
const TOKEN_DIGEST_PREFIX: &str = "sha256:";
/// The prefix of every token flightcache makes, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "fct_";

pub use crate::protocol::rights::Right;

/// A key pattern: `*` stands for any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern(String);

impl KeyPattern {
    /// The pattern `text`.
    ///
    /// # Errors
    /// If it is empty.
    pub fn new(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an empty key pattern matches nothing; use \"*\" for every key".into());
        }
        Ok(Self(text.to_string()))
    }

    /// Whether `key` matches.
    pub fn matches(&self, key: &str) -> bool {
        wildcard_match(self.0.as_bytes(), key.as_bytes())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `*`-only glob matching, linear in the key with one backtrack point.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// What one user may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rights {
    /// Keys the user may read.
    pub read: Vec<KeyPattern>,
    /// Keys the user may write.
    pub write: Vec<KeyPattern>,
    /// Whether the user may clear the cache and read its statistics.
    pub admin: bool,
}

impl Rights {
    /// Every right over every key: a server without users.
    pub fn all() -> Self {
        let every = || vec![KeyPattern("*".into())];
        Self {
            read: every(),
            write: every(),
            admin: true,
        }
    }

    /// Whether these rights allow `right` over `key` (for [`Right::Admin`], `key` is not
    /// looked at).
    pub fn allow(&self, right: Right, key: &str) -> bool {
        match right {
            Right::Read => self.read.iter().any(|p| p.matches(key)),
            Right::Write => self.write.iter().any(|p| p.matches(key)),
            Right::Admin => self.admin,
        }
    }

    /// Whether these rights allow `right` over at least one key (for [`Right::Admin`], the
    /// admin right).
    pub fn allow_any(&self, right: Right) -> bool {
        match right {
            Right::Read => !self.read.is_empty(),
            Right::Write => !self.write.is_empty(),
            Right::Admin => self.admin,
        }
    }

    /// The patterns of `right`, as written, for messages.
    pub fn patterns(&self, right: Right) -> Vec<&str> {
        let patterns = match right {
            Right::Read => &self.read,
            Right::Write => &self.write,
            Right::Admin => return Vec::new(),
        };
        patterns.iter().map(KeyPattern::as_str).collect()
    }
}

/// One user of the users file.
#[derive(Clone)]
pub struct User {
    /// The user's name.
    pub name: String,
    /// The argon2 hash of the password, as a PHC string, if the user has one.
    password_hash: Option<String>,
    /// What the user may do.
    pub rights: Rights,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password", &self.password_hash.as_ref().map(|_| "<hash>"))
            .field("rights", &self.rights)
            .finish()
    }
}

impl User {
    /// Whether `password` is this user's. Slow on purpose (argon2): run it off the async
    /// runtime's threads.
    pub fn verify_password(&self, password: &str) -> bool {
        let Some(hash) = &self.password_hash else {
            return false;
        };
        PasswordHash::new(hash).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
    }

    /// The user's password hash, if any: a session remembers it, so that a password changed
    /// in the users file ends the sessions opened with the old one.
    pub fn password_hash(&self) -> Option<&str> {
        self.password_hash.as_deref()
    }
}

/// Every user, by name and by token digest.
#[derive(Debug, Clone, Default)]
pub struct Users {
    by_name: HashMap<String, User>,
    by_token: HashMap<[u8; 32], String>,
    /// A real user's password hash, checked (and the answer thrown away) when a sign-in
    /// names no user with a password, so that it takes as long as a real check with the
    /// file's own argon2 settings.
    decoy_hash: Option<String>,
}

impl Users {
    /// The user named `name` if `password` is its password. Slow on purpose (argon2), and as
    /// slow for a name with no user (or a user without a password) as for a wrong password,
    /// so the answer's timing does not tell which names exist: run it off the async
    /// runtime's threads.
    pub fn verify_password(&self, name: &str, password: &str) -> Option<&User> {
        match self.get(name).filter(|user| user.password_hash.is_some()) {
            Some(user) => user.verify_password(password).then_some(user),
            None => {
                if let Some(hash) = self
                    .decoy_hash
                    .as_deref()
                    .and_then(|h| PasswordHash::new(h).ok())
                {
                    // The answer is thrown away: only the time it takes matters.
                    let _ = Argon2::default().verify_password(password.as_bytes(), &hash);
                }
                None
            }
        }
    }

    /// Read the users file at `path`.
    ///
    /// # Errors
    /// A message naming the file and what is wrong with it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the users file `{}`: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("users file `{}`: {e}", path.display()))
    }

    /// Parse a users file.
    ///
    /// # Errors
    /// A message saying what is wrong: bad TOML, a plain-text password, a malformed token
    /// digest, an empty pattern, no users.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: UsersFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.users.is_empty() {
            return Err("no users: add a [users.NAME] table".into());
        }
        let mut users = Users::default();
        for (name, entry) in file.users {
            if name.is_empty() || name.contains(':') {
                return Err(format!(
                    "user name {name:?} cannot be used: it must be non-empty and without ':'"
                ));
            }
            if let Some(hash) = &entry.password
                && PasswordHash::new(hash).is_err()
            {
                return Err(format!(
                    "user `{name}`: `password` must be a hash, never the password itself; \
                     make one with `flightcache hash-password`"
                ));
            }
            for token in &entry.tokens {
                let digest = parse_token_digest(token).ok_or_else(|| {
                    format!(
                        "user `{name}`: a token must be written as \"sha256:<64 hex digits>\", \
                         as `flightcache new-token` prints it"
                    )
                })?;
                if let Some(other) = users.by_token.insert(digest, name.clone()) {
                    return Err(format!("users `{other}` and `{name}` share a token"));
                }
            }
            let patterns = |list: &[String]| {
                list.iter()
                    .map(|p| KeyPattern::new(p).map_err(|e| format!("user `{name}`: {e}")))
                    .collect::<Result<Vec<_>, _>>()
            };
            let rights = Rights {
                read: patterns(&entry.read)?,
                write: patterns(&entry.write)?,
                admin: entry.admin,
            };
            if users.decoy_hash.is_none() {
                users.decoy_hash.clone_from(&entry.password);
            }
            let user = User {
                name: name.clone(),
                password_hash: entry.password,
                rights,
            };
            users.by_name.insert(name, user);
        }
        Ok(users)
    }

    /// The user called `name`.
    pub fn get(&self, name: &str) -> Option<&User> {
        self.by_name.get(name)
    }

    /// The user whose API token is `token`.
    pub fn by_token(&self, token: &str) -> Option<&User> {
        let name = self.by_token.get(&token_digest(token))?;
        self.by_name.get(name)
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: BTreeMap<String, UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    password: Option<String>,
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
    #[serde(default)]
    admin: bool,
}

/// The SHA-256 digest of a token.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_token_digest(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix(TOKEN_DIGEST_PREFIX)?;
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

/// An argon2id hash of `password` for the users file (`flightcache hash-password`).
///
/// # Errors
/// If hashing fails (it does not with argon2's default parameters).
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| format!("hashing the password failed: {e}"))
}

/// A new random token (256 bits), and its line for the users file (`flightcache new-token`).
pub fn new_token() -> (String, String) {
    let token = random_token();
    let digest = token_digest(&token);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    (token, format!("{TOKEN_DIGEST_PREFIX}{hex}"))
}

/// 256 random bits as a token: [`TOKEN_PREFIX`] and URL-safe base64.
pub fn random_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_with_stars_anywhere() {
        let p = |s: &str| KeyPattern::new(s).unwrap();
        assert!(p("*").matches("anything/at/all"));
        assert!(p("*").matches(""));
        assert!(p("team-a/*").matches("team-a/x"));
        assert!(p("team-a/*").matches("team-a/x/y"));
        assert!(!p("team-a/*").matches("team-b/x"));
        assert!(!p("team-a/*").matches("team-a"));
        assert!(p("*.daily").matches("sales/2024.daily"));
        assert!(p("a*b*c").matches("aXXbYYc"));
        assert!(!p("a*b*c").matches("aXXbYY"));
        assert!(p("exact").matches("exact"));
        assert!(!p("exact").matches("exactly"));
        assert!(KeyPattern::new("").is_err());
    }

    #[test]
    fn a_users_file_parses_and_refuses_plain_passwords() {
        let hash = hash_password("s3cret").unwrap();
        let (token, digest) = new_token();
        let text = format!(
            r#"
            [users.alice]
            password = "{hash}"
            read = ["team-a/*"]
            write = ["team-a/*"]
            [users.ci]
            tokens = ["{digest}"]
            read = ["*"]
            "#
        );
        let users = Users::parse(&text).unwrap();
        assert_eq!(users.len(), 2);
        let alice = users.get("alice").unwrap();
        assert!(alice.verify_password("s3cret"));
        assert!(!alice.verify_password("S3cret"));
        assert!(alice.rights.allow(Right::Write, "team-a/x"));
        assert!(!alice.rights.allow(Right::Read, "team-b/x"));
        assert!(!alice.rights.allow(Right::Admin, ""));
        assert_eq!(users.by_token(&token).unwrap().name, "ci");
        assert!(users.by_token("fct_forged").is_none());
        assert!(
            !users.get("ci").unwrap().verify_password(""),
            "no password at all"
        );
        assert!(format!("{alice:?}").contains("<hash>"), "no hash in logs");

        for (bad, says) in [
            ("[users.bob]\npassword = \"hunter2\"", "hash-password"),
            ("[users.bob]\ntokens = [\"abc\"]", "sha256:"),
            ("[users.bob]\nread = [\"\"]", "empty key pattern"),
            ("[users.bob]\nraed = [\"*\"]", "unknown field"),
            ("", "no users"),
            ("[users.\"a:b\"]", "without ':'"),
        ] {
            let err = Users::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn tokens_are_random_and_their_digests_parse() {
        let (a, digest) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 43);
        assert_eq!(parse_token_digest(&digest), Some(token_digest(&a)));
    }
}
