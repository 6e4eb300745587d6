//! What `serve` checks and says as it starts: nothing it cannot serve is announced as
//! listening, and what will trouble its clients is said.

use std::io::BufRead;
use std::process::{Command, Stdio};

use super::{BIN, temp_path};

/// Run `sh -c SCRIPT` (which execs `serve`) until its first line on stdout, then stop it:
/// that line (empty if it exited first), its exit status if it exited, and its stderr.
fn serve_until_first_line(script: &str) -> (String, Option<i32>, String) {
    let mut child = Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let exited = child.try_wait().unwrap().and_then(|status| status.code());
    child.kill().ok();
    let output = child.wait_with_output().unwrap();
    let code = exited.or(output.status.code());
    (
        line,
        code,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `serve` raises its open-file limit as far as the hard limit allows, and says when even
/// that is short of what --max-connections and the metrics listener may need.
#[test]
fn serve_warns_when_the_open_file_limit_is_short_of_its_connection_limits() {
    let (line, _, stderr) =
        serve_until_first_line(&format!("ulimit -n 256 && exec {BIN} serve --port 0"));
    assert!(line.starts_with("listening on "), "{line}");
    assert!(
        stderr.contains("open-file limit is below") && stderr.contains("needed=1088"),
        "{stderr}"
    );
}

/// A key that does not belong to the certificate: `serve` exits 1 saying so, and never
/// prints the line that says it listens (it printed `listening on grpc+tls://...`, then
/// exited).
#[test]
fn serve_with_a_key_of_another_certificate_never_says_it_listens() {
    use flightcache::bench::certificates::CertificateAuthority;
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::new("startup test CA").unwrap();
    let (one, other) = (
        ca.issue_server(&["127.0.0.1"]).unwrap(),
        ca.issue_server(&["127.0.0.1"]).unwrap(),
    );
    let cert = temp_path(&dir, "server.pem");
    let key = temp_path(&dir, "other.key");
    std::fs::write(&cert, &one.cert_pem).unwrap();
    std::fs::write(&key, &other.key_pem).unwrap();
    let (line, code, stderr) = serve_until_first_line(&format!(
        "exec {BIN} serve --port 0 --tls-cert {} --tls-key {}",
        cert.display(),
        key.display()
    ));
    assert_eq!(line, "", "nothing on stdout");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("does the key belong to the certificate") && stderr.contains("other.key"),
        "{stderr}"
    );
}

/// An expired certificate serves (a renewed one may be on its way) but is warned about.
#[test]
fn serve_warns_of_an_expired_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let certificate = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (temp_path(&dir, "old.pem"), temp_path(&dir, "old.key"));
    std::fs::write(&cert_path, certificate.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let (line, _, stderr) = serve_until_first_line(&format!(
        "exec {BIN} serve --port 0 --tls-cert {} --tls-key {}",
        cert_path.display(),
        key_path.display()
    ));
    assert!(line.starts_with("listening on grpc+tls://"), "{line}");
    assert!(
        stderr.contains("the server certificate expired on") && stderr.contains("2021"),
        "{stderr}"
    );
}

/// The two warnings of protected mode's neighbourhood: users served without TLS on an address
/// other than loopback (passwords and tokens in clear text), and a metrics page off loopback
/// (no authentication). The server binds the wildcard address and is stopped at once; no
/// traffic goes anywhere.
#[test]
fn serve_warns_of_passwords_without_tls_and_of_a_metrics_page_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let users = temp_path(&dir, "users.toml");
    let (_, digest) = flightcache::auth::users::new_token();
    std::fs::write(
        &users,
        format!("[users.ci]\ntokens = [\"{digest}\"]\nread = [\"*\"]\n"),
    )
    .unwrap();
    let (line, _, stderr) = serve_until_first_line(&format!(
        "exec {BIN} serve --host 0.0.0.0 --port 0 --users {} --metrics 0.0.0.0:0",
        users.display()
    ));
    assert!(line.starts_with("listening on grpc://0.0.0.0:"), "{line}");
    assert!(
        stderr.contains("serving users without TLS: passwords and tokens cross the network"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the metrics page has no authentication"),
        "{stderr}"
    );
    // On loopback, neither.
    let (line, _, stderr) = serve_until_first_line(&format!(
        "exec {BIN} serve --port 0 --users {} --metrics 127.0.0.1:0",
        users.display()
    ));
    assert!(line.starts_with("listening on grpc://127.0.0.1:"), "{line}");
    assert!(
        !stderr.contains("without TLS") && !stderr.contains("no authentication"),
        "{stderr}"
    );
}
