//! `serve`: opens the backend, binds the listeners, prints the banner and runs the daemon
//! until SIGINT or SIGTERM asks it to drain.

use std::io::Write;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::storage::backend::{Backend, Purpose};

pub(super) async fn serve(config: Config) -> anyhow::Result<()> {
    crate::config::raise_fd_limit();
    let backend = Backend::open(&config, Purpose::Daemon).await?;
    // Generate the secret (if needed) before anything is served, so `simulate` can read it.
    crate::secrets::global_secret(&config, true)?;
    // A receiver that could not verify what the other instances verify says so and stops
    // before it takes any traffic (see `vault`).
    let receives = config.serve.role != crate::cli::Role::Worker && config.webhook.verify_signatures;
    crate::vault::Vault::new(&config, &backend)?.check_at_start(receives).await?;
    let listeners = crate::serve::Listeners::bind(&config).await?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", listeners.banner())?;
        stdout.flush()?;
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    crate::serve::run(config, backend, listeners, Default::default(), shutdown).await
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("Could not install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; draining"),
        _ = int.recv() => tracing::info!("SIGINT received; draining"),
    }
    shutdown.cancel();
}
