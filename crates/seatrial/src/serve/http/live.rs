//! A run's live log as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use seatrial_store::RunId;

use super::ApiError;
use super::api::load_run;
use crate::serve::state::Shared;

/// The live log: every line after `Last-Event-ID` (or from the start), then new lines as they
/// come; an `end` event once the run is over and everything was sent.
pub(super) async fn run_events(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<RunId>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    load_run(&shared, id).await?;
    let mut after: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut changes = shared.changes.subscribe();
    let stream = async_stream(move |tx| async move {
        loop {
            let chunks = match shared.store.logs_since(id, after, 500).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(run = id.0, error = %e, "live log: cannot read");
                    Vec::new()
                }
            };
            let got = chunks.len();
            for c in chunks {
                after = c.seq;
                let event = Event::default()
                    .id(c.seq.to_string())
                    .event("log")
                    .data(c.text);
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if got == 500 {
                continue;
            }
            let run = shared.store.get(id).await.ok().flatten();
            if let Some(run) = run {
                let state = Event::default().event("state").data(run.state.as_str());
                if tx.send(Ok(state)).await.is_err() {
                    return;
                }
                if run.state.is_terminal() {
                    // Lines written just before the verdict were read above.
                    let _ = tx.send(Ok(Event::default().event("end").data(""))).await;
                    return;
                }
            }
            // Woken by this process's writers; other servers' lines show within a second.
            let wait = async {
                loop {
                    match changes.recv().await {
                        Ok(changed) if changed == id => return,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(_) => std::future::pending::<()>().await,
                    }
                }
            };
            tokio::select! {
                () = wait => {},
                () = tokio::time::sleep(Duration::from_secs(1)) => {},
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A stream fed by a producer task through a small channel.
fn async_stream<F, Fut, T>(producer: F) -> impl Stream<Item = T>
where
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(producer(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
