//! The configuration file: `futurnal::config::parse_file` (what `Config::load` reads the
//! file with), then `Config::resolve` layering an environment over it, with and without
//! `--data-dir` and `serve` flags, and the redacting `Debug` of both.
//!
//! Input: TOML text, optionally followed by a line `%%` and `NAME=VALUE` lines that stand
//! in for the process environment (`FUTURNAL_LISTEN=...`). Nothing may panic.
#![no_main]
#![forbid(unsafe_code)]

use std::collections::HashMap;

use futurnal::cli::{GlobalArgs, ServeArgs};
use futurnal::config::{parse_file, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (toml_text, env_text) = text.split_once("\n%%\n").unwrap_or((text, ""));
    let env: HashMap<&str, &str> = env_text.lines().filter_map(|l| l.split_once('=')).collect();
    let env = |name: &str| env.get(name).map(|v| (*v).to_owned());

    let globals = [
        GlobalArgs {
            data_dir: Some("/nonexistent/futurnal-fuzz".into()),
            config: None,
            database_url: None,
            github_api_url: None,
            json: false,
        },
        GlobalArgs {
            data_dir: None,
            config: None,
            database_url: env("FUTURNAL_DATABASE_URL"),
            github_api_url: env("FUTURNAL_GITHUB_API_URL"),
            json: true,
        },
    ];
    let serve = ServeArgs {
        listen: None,
        admin_listen: Some("127.0.0.1:0".parse().expect("an address")),
        role: None,
        no_poll: true,
        instance: env("FUTURNAL_INSTANCE"),
    };
    for (global, serve) in [(&globals[0], None), (&globals[1], Some(&serve))] {
        let Ok(file) = parse_file(toml_text) else { return };
        let printed = format!("{file:?}");
        assert!(!printed.is_empty());
        if let Ok(config) = Config::resolve(global, serve, file, env) {
            let _ = format!("{config:?} {:?}", config.webhook);
            assert!(config.workers.concurrency >= 1 && config.workers.max_attempts >= 1);
            assert!(config.webhook.verify_signatures || config.serve.listen.ip().is_loopback());
        }
    }
});
