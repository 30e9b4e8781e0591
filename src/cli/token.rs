//! `sources github token set/remove/status`: the GitHub token's keychain entry, with
//! nothing printed of the token itself.

use anyhow::{bail, Context};

use super::args::TokenCommand;
use crate::config::Config;
use crate::keychain::TOKEN_ACCOUNT;
use crate::output::print_json;

/// A secret from standard input: one line from a terminal (after `prompt`; it echoes, so
/// a pipe or a file is better), else everything piped in.
pub(super) fn read_secret_input(prompt: &str) -> anyhow::Result<String> {
    let mut input = String::new();
    let stdin = std::io::stdin();
    if std::io::IsTerminal::is_terminal(&stdin) {
        eprint!("{prompt}: ");
        stdin.read_line(&mut input).context("failed to read standard input")?;
    } else {
        std::io::Read::read_to_string(&mut stdin.lock(), &mut input).context("failed to read standard input")?;
    }
    Ok(input)
}

/// `sources github token`: the keychain entry, with nothing printed of the token.
pub(super) fn token(config: &Config, command: TokenCommand) -> anyhow::Result<()> {
    let keychain = || {
        crate::keychain::get().map_err(|why| {
            anyhow::anyhow!("there is no OS keychain here ({why}); set GITHUB_TOKEN in the environment instead")
        })
    };
    let message = match command {
        TokenCommand::Set => {
            let input = read_secret_input("GitHub token (one line)")?;
            let token = input.trim();
            if token.is_empty() || token.contains(char::is_whitespace) {
                bail!("expected one token on standard input (for example `gh auth token | futurnal sources github token set`)");
            }
            keychain()?.set(TOKEN_ACCOUNT, token)?;
            "stored in the OS keychain".to_owned()
        }
        TokenCommand::Remove => {
            keychain()?.delete(TOKEN_ACCOUNT)?;
            "removed from the OS keychain".to_owned()
        }
        TokenCommand::Status => match crate::github::client::Token::discover() {
            Some((_, source)) => format!("from {source}"),
            None => "none: set GITHUB_TOKEN or run `futurnal sources github token set`".to_owned(),
        },
    };
    if config.json {
        print_json(&serde_json::json!({ "token": message }));
    } else {
        crate::outln!("GitHub token: {message}");
    }
    Ok(())
}
