//! Where a client fetches a table: the location every `FlightEndpoint` carries.
//!
//! A Flight endpoint names the servers its ticket can be redeemed at. flightcache's endpoints
//! name flightcache itself: the URI it was told to advertise (`serve --advertise`), else the
//! address it is bound to in Arrow's canonical form `grpc+tcp://HOST:PORT` (what pyarrow's
//! `Location.for_grpc_tcp` builds), or `grpc+tls://HOST:PORT` when it serves TLS. A server bound to a wildcard address (0.0.0.0, ::) cannot
//! know which of its addresses a client reached, so it advertises Flight's
//! [`REUSE_CONNECTION`] location instead, which tells a client to use the connection it
//! already has.

use std::net::SocketAddr;

/// Flight's location for "this same server, over the connection you already have".
pub const REUSE_CONNECTION: &str = "arrow-flight-reuse-connection://?";

/// The URI schemes an advertised location may have.
pub const LOCATION_SCHEMES: [&str; 5] = [
    "grpc",
    "grpc+tcp",
    "grpc+tls",
    "grpc+unix",
    "arrow-flight-reuse-connection",
];

/// The location a server bound to `addr`, serving TLS or not, advertises when it is told
/// none.
pub fn default_location(addr: SocketAddr, tls: bool) -> String {
    if addr.ip().is_unspecified() {
        REUSE_CONNECTION.to_string()
    } else if tls {
        format!("grpc+tls://{addr}")
    } else {
        format!("grpc+tcp://{addr}")
    }
}

/// Check that `uri` can be advertised: a URI of one of the [`LOCATION_SCHEMES`].
///
/// # Errors
/// What is wrong with it, for a person.
pub fn check_location(uri: &str) -> Result<(), String> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(format!(
            "`{uri}` is not a URI; advertise grpc+tcp://HOST:PORT (or grpc+tls://HOST:PORT)"
        ));
    };
    if !LOCATION_SCHEMES.contains(&scheme) {
        return Err(format!(
            "`{scheme}` is not a Flight location scheme; use one of {}",
            LOCATION_SCHEMES.join(", ")
        ));
    }
    if rest.is_empty() && scheme != "arrow-flight-reuse-connection" {
        return Err(format!(
            "`{uri}` names no host; advertise {scheme}://HOST:PORT"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_address_is_advertised_in_canonical_form() {
        assert_eq!(
            default_location("127.0.0.1:8815".parse().unwrap(), false),
            "grpc+tcp://127.0.0.1:8815"
        );
        assert_eq!(
            default_location("[::1]:9000".parse().unwrap(), false),
            "grpc+tcp://[::1]:9000"
        );
        assert_eq!(
            default_location("127.0.0.1:8815".parse().unwrap(), true),
            "grpc+tls://127.0.0.1:8815",
            "a TLS server is reached over TLS"
        );
    }

    #[test]
    fn a_wildcard_bind_advertises_the_connection_itself() {
        assert_eq!(
            default_location("0.0.0.0:8815".parse().unwrap(), true),
            REUSE_CONNECTION
        );
        assert_eq!(
            default_location("[::]:8815".parse().unwrap(), false),
            REUSE_CONNECTION
        );
    }

    #[test]
    fn only_flight_uris_can_be_advertised() {
        for good in [
            "grpc+tcp://cache.example.com:8815",
            "grpc://10.0.0.1:8815",
            "grpc+tls://cache:443",
            REUSE_CONNECTION,
        ] {
            assert!(check_location(good).is_ok(), "{good}");
        }
        for bad in ["cache:8815", "http://cache:8815", "grpc+tcp://", ""] {
            assert!(check_location(bad).is_err(), "{bad}");
        }
    }
}
