//! futurnal: a daemon and CLI that keeps a local, queryable copy of GitHub repositories
//! up to date from webhooks. See ARCHITECTURE.md for the map.

pub mod app;
pub mod backend;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod handlers;
pub mod http;
pub mod metrics;
pub mod output;
pub mod queue;
pub mod secrets;
pub mod serve;
pub mod simulate;
pub mod store;
pub mod time;
pub mod worker;
