//! Teardown: remove the app and wait until it is gone, whatever happened before.

use seatrial_engine::{EngineError, ErrorKind, UndeployOptions};
use tokio_util::sync::CancellationToken;

use crate::Ctx;
use crate::report::TrialReport;
use crate::stage::{StageError, record, skip};

/// Always runs (also after failure or cancellation, with its own token), unless `keep`.
/// `keep_data`: a quick run's canonical keeps its volumes (the restore stage puts them back).
pub(crate) async fn teardown(
    ctx: &Ctx<'_>,
    report: &mut TrialReport,
    deployed: bool,
    keep_data: bool,
) {
    if ctx.config.keep {
        let why = format!(
            "--keep: the app is left up; remove it with `seatrial app undeploy {} --volumes`",
            ctx.stack
        );
        skip(report, ctx.observer, "teardown", &why);
        return;
    }
    if !deployed {
        skip(report, ctx.observer, "teardown", "nothing was deployed");
        return;
    }
    let options = UndeployOptions {
        remove_data: !keep_data,
        // An interrupted deploy's last request may still be creating something.
        settle: report.interrupted,
        ..UndeployOptions::default()
    };
    let fresh = CancellationToken::new();
    record(report, &fresh, ctx.observer, "teardown", "removing the app and waiting until it is gone", Box::pin(async {
        match ctx.engine.undeploy(&ctx.stack, &options, ctx.observer).await {
            Ok(r) => Ok((
                format!(
                    "removed {} service(s), {} network(s), {} volume(s), {} secret(s), {} config(s); all gone after {}",
                    r.removed_services.len(),
                    r.removed_networks.len(),
                    r.removed_volumes.len(),
                    r.removed_secrets.len(),
                    r.removed_configs.len(),
                    seatrial_engine::fmt_duration(r.elapsed)
                ) + if keep_data { "; the canonical's volumes are kept for the restore" } else { "" },
                Vec::new(),
            )),
            Err(EngineError::StackNotFound { .. }) => Ok(("nothing was left to remove".to_owned(), Vec::new())),
            Err(e) => Err(StageError::Error(e.to_string(), ErrorKind::Infrastructure)),
        }
    }))
    .await;
}
