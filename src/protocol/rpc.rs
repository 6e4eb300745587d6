//! `FlightRpc`: the RPCs of Arrow Flight's `FlightService`, and the HTTP/2 paths gRPC sends
//! them to.

use std::fmt;

/// The gRPC service every Flight RPC belongs to.
pub const FLIGHT_SERVICE: &str = "arrow.flight.protocol.FlightService";

/// One RPC of Flight's `FlightService`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlightRpc {
    /// `Handshake`: authentication.
    Handshake,
    /// `ListFlights`: describe the cached tables.
    ListFlights,
    /// `GetFlightInfo`: describe one table.
    GetFlightInfo,
    /// `PollFlightInfo`: describe one table, for long-running queries.
    PollFlightInfo,
    /// `GetSchema`: one table's schema.
    GetSchema,
    /// `DoGet`: stream a table.
    DoGet,
    /// `DoPut`: upload a table.
    DoPut,
    /// `DoExchange`: a bidirectional stream.
    DoExchange,
    /// `DoAction`: run an action.
    DoAction,
    /// `ListActions`: the actions offered.
    ListActions,
}

impl FlightRpc {
    /// Every RPC, in the order of Flight's protocol definition.
    pub const ALL: [FlightRpc; 10] = [
        FlightRpc::Handshake,
        FlightRpc::ListFlights,
        FlightRpc::GetFlightInfo,
        FlightRpc::PollFlightInfo,
        FlightRpc::GetSchema,
        FlightRpc::DoGet,
        FlightRpc::DoPut,
        FlightRpc::DoExchange,
        FlightRpc::DoAction,
        FlightRpc::ListActions,
    ];

    /// The gRPC method name (`DoGet`).
    pub fn method(self) -> &'static str {
        match self {
            FlightRpc::Handshake => "Handshake",
            FlightRpc::ListFlights => "ListFlights",
            FlightRpc::GetFlightInfo => "GetFlightInfo",
            FlightRpc::PollFlightInfo => "PollFlightInfo",
            FlightRpc::GetSchema => "GetSchema",
            FlightRpc::DoGet => "DoGet",
            FlightRpc::DoPut => "DoPut",
            FlightRpc::DoExchange => "DoExchange",
            FlightRpc::DoAction => "DoAction",
            FlightRpc::ListActions => "ListActions",
        }
    }

    /// The name client libraries give the RPC (`do_get`), as messages and logs use it.
    pub fn name(self) -> &'static str {
        match self {
            FlightRpc::Handshake => "handshake",
            FlightRpc::ListFlights => "list_flights",
            FlightRpc::GetFlightInfo => "get_flight_info",
            FlightRpc::PollFlightInfo => "poll_flight_info",
            FlightRpc::GetSchema => "get_schema",
            FlightRpc::DoGet => "do_get",
            FlightRpc::DoPut => "do_put",
            FlightRpc::DoExchange => "do_exchange",
            FlightRpc::DoAction => "do_action",
            FlightRpc::ListActions => "list_actions",
        }
    }

    /// The RPC an HTTP/2 request path names (`/arrow.flight.protocol.FlightService/DoGet`).
    pub fn from_path(path: &str) -> Option<Self> {
        let method = path
            .strip_prefix('/')?
            .strip_prefix(FLIGHT_SERVICE)?
            .strip_prefix('/')?;
        Self::ALL.into_iter().find(|rpc| rpc.method() == method)
    }
}

impl fmt::Display for FlightRpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_is_found_by_its_path() {
        for rpc in FlightRpc::ALL {
            let path = format!("/{FLIGHT_SERVICE}/{}", rpc.method());
            assert_eq!(FlightRpc::from_path(&path), Some(rpc), "{path}");
        }
    }

    #[test]
    fn other_paths_are_no_rpc() {
        for path in [
            "",
            "/",
            "/arrow.flight.protocol.FlightService",
            "/arrow.flight.protocol.FlightService/",
            "/arrow.flight.protocol.FlightService/DoGetAll",
            "/other.Service/DoGet",
            "/arrow.flight.protocol.FlightService/doget",
        ] {
            assert_eq!(FlightRpc::from_path(path), None, "{path}");
        }
    }
}
