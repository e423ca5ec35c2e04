//! `seatrial serve`: the queue runner and the HTTP edge over the store. Trials run inside the
//! server exactly as on the command line.
//!
//! `state` is what the others share and depends on none of them; `worker` runs the queue,
//! `nightly` the nightly job (reconcile and the cold sweep, at the times `schedule` says),
//! `forge` turns pull-request comments into runs and reports back, `http` serves the API, the
//! dashboard (drawn by `dashboard`, with `view` and `infra_view`) and the webhook; `config` and `metrics` are
//! leaves. This file wires them and runs the shutdown sequence.

pub mod config;
pub mod dashboard;
pub mod forge;
pub mod http;
pub mod infra_view;
pub mod metrics;
pub mod nightly;
pub mod schedule;
pub mod state;
pub mod view;
pub mod worker;

use std::sync::Arc;

use crate::exit::{self, Failure};
use config::ServeConfig;
use state::Shared;

pub async fn run(config: ServeConfig) -> Result<(), Failure> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        Failure::new(
            exit::BAD_INPUT,
            format!(
                "cannot create the data directory {}: {e} (set SEATRIAL_DATA_DIR or data_dir)",
                config.data_dir.display()
            ),
        )
    })?;
    // The nightly's reconcile keeps infra apps' secret values under the data directory, like
    // their state: the server's (unless --data-dir named one already).
    crate::secrets::set_data_dir(config.data_dir.clone());
    let store = seatrial_store::Store::open(&config.database_url)
        .await
        .map_err(|e| Failure::new(exit::INFRASTRUCTURE, e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            Failure::new(
                exit::BAD_INPUT,
                format!(
                    "cannot listen on {}: {e} (set SEATRIAL_LISTEN or listen)",
                    config.listen
                ),
            )
        })?;
    let shared = Arc::new(Shared::new(store, config));
    tracing::info!(
        listen = %shared.config.listen,
        database = shared.store.backend(),
        capacity = shared.config.capacity,
        owner = %shared.owner,
        "seatrial serve starts"
    );
    if shared.config.api_tokens.is_empty() {
        tracing::warn!(
            "no API token configured: the API refuses every write (set SEATRIAL_API_TOKEN)"
        );
    }
    eprintln!(
        "seatrial serve: listening on http://{} ({} store, capacity {})",
        shared.config.listen,
        shared.store.backend(),
        shared.config.capacity
    );
    // Crash recovery first: runs of dead servers are reaped before anything is claimed.
    worker::reap_once(&shared).await;
    let reaper = tokio::spawn(worker::reap_loop(shared.clone()));
    let mut forge_tasks = Vec::new();
    let forge_link = match shared.config.forge.clone() {
        Some(config) => Some(Arc::new(
            forge::ForgeLink::new(config).map_err(|e| Failure::new(exit::BAD_INPUT, e))?,
        )),
        None => None,
    };
    if let Some(link) = forge_link.clone() {
        tracing::info!(
            forge = %link.config.url,
            repos = link.config.repos.len(),
            every = %seatrial_engine::fmt_duration(link.config.poll_interval),
            webhook = link.config.webhook_secret.is_some(),
            "polling the forge for comment commands"
        );
        forge_tasks.push(tokio::spawn(forge::poll_loop(shared.clone(), link.clone())));
        forge_tasks.push(tokio::spawn(forge::report_loop(shared.clone(), link)));
    }
    let queue = tokio::spawn(worker::run_queue(shared.clone(), forge_link.clone()));
    match &shared.config.schedule {
        Some(s) => {
            tracing::info!(nightly = %s.nightly, timezone = %s.timezone, infra = shared.config.infra.apps.len(), "nightly job scheduled")
        }
        None if !shared.config.infra.apps.is_empty() => tracing::warn!(
            "[[infra]] apps are configured but no [schedule]: serve does not reconcile them (set schedule.nightly, or run `seatrial reconcile`)"
        ),
        None => {}
    }
    let nightly = tokio::spawn(nightly::run_loop(shared.clone()));

    let mut interrupts = crate::signals::Interrupts::install()?;
    let stop_http = tokio_util::sync::CancellationToken::new();
    let server = {
        let app = http::router(shared.clone(), forge_link.clone());
        let stop = stop_http.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };
    interrupts.first().await;
    tracing::info!("shutdown requested: no new claims; running trials may finish");
    eprintln!(
        "seatrial serve: shutting down — running trials get {} to finish (signal again to cancel them now)",
        seatrial_engine::fmt_duration(shared.config.shutdown_grace)
    );
    shared.shutdown.cancel();
    // The queue's trials and the nightly job each get the grace period, then are cancelled.
    let work = async {
        let _ = queue.await;
        let _ = nightly.await;
    };
    tokio::pin!(work);
    tokio::select! {
        () = &mut work => {},
        () = interrupts.again() => {
            eprintln!("seatrial serve: cancelling running trials now (teardown still runs)");
            shared.cancel_all_running();
            work.await;
        }
    }
    reaper.abort();
    if let Some(link) = &forge_link {
        // The last verdicts reach their pull requests before the server goes.
        forge::report_once(&shared, link).await;
    }
    for t in forge_tasks {
        t.abort();
    }
    stop_http.cancel();
    // Live views end once their runs are over; don't wait on idle clients for long.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    tracing::info!("seatrial serve stopped");
    Ok(())
}
