//! `corsgate serve`'s life: start, log where it listens, and on SIGTERM or ctrl-c drain, then
//! stop (a second signal stops at once). SIGHUP is the supervisor's (see `crate::watch`).

use super::{ConfigSource, StartError, spawn_with};
use crate::config::Config;

/// How a `corsgate serve` run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Drained: every request that was in flight finished or had its grace.
    Drained,
    /// A second SIGTERM or ctrl-c: stopped at once, requests in flight cut.
    Forced,
}

/// `corsgate serve`: starts, logs where it listens, reloads on SIGHUP, and on SIGTERM or
/// ctrl-c drains then stops (a second signal stops at once).
pub async fn run(config: Config, source: Option<ConfigSource>) -> Result<Stopped, StartError> {
    let running = spawn_with(config, source).await?;
    if let Some(demo) = running.demo_origin {
        tracing::info!("demo origin serving on http://{demo}");
    }
    if let Some(admin) = running.admin {
        tracing::info!("admin listening on http://{admin}");
    }
    for addr in running
        .addrs
        .iter()
        .filter(|a| !running.tls_addrs.contains(a))
    {
        tracing::info!("corsgate listening on http://{addr}");
    }
    for addr in &running.tls_addrs {
        tracing::info!("corsgate listening on https://{addr}");
    }
    for addr in &running.redirect_addrs {
        tracing::info!("redirecting http://{addr} to https");
    }
    for route in running.gateway().routes.all() {
        tracing::info!(route = route.index, origin = %route.origin, "{}", route.rules.describe());
    }
    for shadow in running.gateway().shadows.iter().flatten() {
        tracing::info!(
            route = shadow.route(),
            "shadow rules: {}",
            shadow.rules().describe()
        );
    }
    let mut signals = Signals::new();
    signals.next().await;
    running.drain();
    let delay = running.gateway().timeouts.drain_delay;
    tracing::info!(
        "shutting down: /readyz answers 503; accepting for {} more, then finishing in-flight \
         requests",
        humantime::format_duration(delay)
    );
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = signals.next() => return Ok(forced()),
    }
    tracing::info!("no longer accepting: finishing in-flight requests");
    tokio::select! {
        () = running.shutdown() => {
            tracing::info!("stopped");
            Ok(Stopped::Drained)
        }
        () = signals.next() => Ok(forced()),
    }
}

fn forced() -> Stopped {
    tracing::warn!("second signal: stopping now, requests in flight are cut");
    Stopped::Forced
}

/// SIGTERM and ctrl-c (SIGINT), every time they come.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let term = signal(SignalKind::terminate())
                .map_err(|err| tracing::warn!("cannot listen for SIGTERM: {err}"))
                .ok();
            Signals { term }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
