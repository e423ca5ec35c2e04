//! Crash recovery: runs whose lease expired (their server stopped heartbeating) are re-queued
//! once or errored by the store; what their trial left on the engine is removed here.

use std::sync::Arc;
use std::time::Duration;

use seatrial_engine::{EngineError, UndeployOptions};
use seatrial_store::{Reaped, RunId};

use super::MAX_ATTEMPTS;
use crate::serve::state::Shared;

/// Reaps at start and then every half lease, until shutdown.
pub async fn reap_loop(shared: Arc<Shared>) {
    let every = (shared.config.lease / 2).max(Duration::from_secs(1));
    loop {
        reap_once(&shared).await;
        tokio::select! {
            () = tokio::time::sleep(every) => {},
            () = shared.shutdown.cancelled() => return,
        }
    }
}

pub async fn reap_once(shared: &Shared) {
    let reaped = match shared.store.reap_expired(MAX_ATTEMPTS).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot look for runs with expired leases");
            return;
        }
    };
    for (run, what) in reaped {
        let action = match what {
            Reaped::Requeued => "re-queued",
            Reaped::Errored => "errored",
            Reaped::Cancelled => "cancelled",
        };
        tracing::warn!(run = run.id.0, stack = ?run.stack, action, reason = ?run.reason, "reaped a run whose server stopped heartbeating");
        shared.metrics.reaped(what);
        let _ = shared
            .store
            .append_log(
                run.id,
                &format!(
                    "{} ({action})",
                    run.reason.as_deref().unwrap_or("lease expired")
                ),
            )
            .await;
        if let Some(stack) = &run.stack {
            remove_leftovers(shared, run.id, stack).await;
        }
        shared.changed(run.id);
        if what == Reaped::Requeued {
            shared.wake.notify_one();
        }
    }
}

/// Removes what a dead server's trial left on the engine.
async fn remove_leftovers(shared: &Shared, id: RunId, stack: &str) {
    let Ok(engine) = shared.engine().await else {
        tracing::error!(
            run = id.0,
            stack,
            "the engine is unreachable: the janitor will remove the stack later"
        );
        return;
    };
    let options = UndeployOptions {
        remove_data: true,
        ..UndeployOptions::default()
    };
    let line = match engine
        .undeploy(stack, &options, &seatrial_engine::NoProgress)
        .await
    {
        Ok(r) => format!(
            "removed what the interrupted attempt left: stack {stack}, {} service(s), {} volume(s)",
            r.removed_services.len(),
            r.removed_volumes.len()
        ),
        Err(EngineError::StackNotFound { .. }) => {
            format!("the interrupted attempt left nothing of stack {stack}")
        }
        Err(e) => format!("cannot remove stack {stack} of the interrupted attempt: {e}"),
    };
    let _ = shared.store.append_log(id, &line).await;
}
