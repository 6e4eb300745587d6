//! The subcommands and flags about who you are: `hash-password`, `new-token`, `whoami`, and the
//! client's credentials and TLS settings (`--token`, `--user`, `--tls-ca`, `--tls-cert`).

use std::io::{IsTerminal, Write};

use anyhow::{Context, bail};

use flightcache::ClientConfig;
use flightcache::auth::users::{hash_password, new_token};
use flightcache::client::ClientTls;
use flightcache::protocol::credentials::Credentials;

use crate::cli::ServerArgs;
use crate::output::connect;

/// The environment variable a password is read from, before any prompt.
const PASSWORD_ENV: &str = "FLIGHTCACHE_PASSWORD";

/// `flightcache hash-password`: an argon2id hash for the users file.
pub fn hash_password_command() -> anyhow::Result<()> {
    let password = read_password("password to hash")?;
    if password.is_empty() {
        bail!("an empty password protects nothing; choose one");
    }
    let hash = hash_password(&password).map_err(anyhow::Error::msg)?;
    writeln!(std::io::stdout(), "password = \"{hash}\"")?;
    Ok(())
}

/// `flightcache new-token`: a random API token, and its line for the users file.
pub fn new_token_command() -> anyhow::Result<()> {
    let (token, digest) = new_token();
    let mut out = std::io::stdout().lock();
    writeln!(out, "token: {token}")?;
    writeln!(out, "users file: tokens = [\"{digest}\"]")?;
    writeln!(
        out,
        "give the token to its user (FLIGHTCACHE_TOKEN, or `authorization: Bearer TOKEN`); \
         only its digest goes in the file"
    )?;
    Ok(())
}

/// `flightcache whoami`: who the server takes this client for.
pub async fn whoami(args: ServerArgs) -> anyhow::Result<()> {
    let mut client = connect(&args).await?;
    let me = client.whoami().await?;
    let mut out = std::io::stdout().lock();
    match &me.user {
        Some(user) => writeln!(out, "user:  {user} (by {})", me.proof)?,
        None => writeln!(out, "user:  none (the server has no users: every right)")?,
    }
    let list = |patterns: &[String]| {
        if patterns.is_empty() {
            "-".to_string()
        } else {
            patterns.join(", ")
        }
    };
    writeln!(out, "read:  {}", list(&me.read))?;
    writeln!(out, "write: {}", list(&me.write))?;
    writeln!(out, "admin: {}", if me.admin { "yes" } else { "no" })?;
    Ok(())
}

/// The client settings `args` ask for: TLS files read, credentials gathered (a password from
/// FLIGHTCACHE_PASSWORD or a prompt, never the command line).
pub fn client_config(args: &ServerArgs) -> anyhow::Result<ClientConfig> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).with_context(|| format!("reading the {what} `{}`", path.display()))
    };
    let identity = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((read(cert, "certificate")?, read(key, "private key")?)),
        _ => None,
    };
    let tls = ClientTls {
        ca_pem: args
            .tls_ca
            .as_deref()
            .map(|ca| read(ca, "CA certificate"))
            .transpose()?,
        identity,
        domain: None,
    };
    let credentials = match (&args.token, &args.user) {
        (Some(token), _) => Some(Credentials::Bearer(token.clone())),
        (None, Some(user)) => Some(Credentials::Basic {
            user: user.clone(),
            password: read_password(&format!("password for {user}"))?,
        }),
        (None, None) => None,
    };
    Ok(ClientConfig {
        tls,
        credentials,
        ..ClientConfig::default()
    })
}

/// A password from FLIGHTCACHE_PASSWORD, or prompted for on the terminal.
fn read_password(prompt: &str) -> anyhow::Result<String> {
    if let Ok(password) = std::env::var(PASSWORD_ENV) {
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password: set {PASSWORD_ENV}, or run in a terminal to be asked for it");
    }
    rpassword::prompt_password(format!("{prompt}: ")).context("reading the password")
}
