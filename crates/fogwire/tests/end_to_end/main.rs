//! End-to-end tests: the real `fogwire` binary, real processes, real TCP on
//! loopback, real key files.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod browser;
mod cli;
mod cluster;
mod compute;
mod exit;
mod harness;
mod ledger;
mod messages;
mod netns;
mod package;
mod punch;
mod reach;
mod restore;
mod routing;
mod rpc;
mod store;
mod vpn;
mod web;
