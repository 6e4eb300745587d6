//! Integration tests of the Flight server: a real server on 127.0.0.1:0, real gRPC clients.

#[path = "../common/mod.rs"]
mod common;

mod concurrency;
mod fuzz;
mod interop;
mod limits;
mod memory;
mod persistence;
mod roundtrip;
mod rpc;
mod security;
mod spec;
mod sql;
mod streams;
mod uploads;
mod valid_tables;
mod validation;
mod wire;
