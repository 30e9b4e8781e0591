//! The one integration test binary: the real server on port 0, spoken to over HTTP, and
//! the real `futurnal` binary where a whole process is the point (signals, kill -9, CLI).

mod burst;
mod changes;
mod cli;
mod contract;
mod copy;
mod dashboard;
mod dashboard_api;
mod durability;
mod entities;
mod fake_github;
mod feed;
mod flood;
mod hardening;
mod helpers;
mod hooks;
mod keychain;
mod migrate;
mod payloads;
mod pg_cluster;
mod pg_cluster_faults;
mod pg_faults;
mod pg_hosts;
mod pg_mode;
mod pg_secrets;
mod pg_server;
mod pg_tls;
mod poll;
mod receiver;
mod scheduling;
mod store;
mod workers;
