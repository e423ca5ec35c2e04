//! One user of a canonical at a time: an exclusive `flock` on `warm/<recipe>/lock`, held for a
//! whole quick run (restore included) and while a promotion replaces the canonical. The kernel
//! releases it when its holder dies (kill -9 too), so a lock is never left stale.

use std::path::Path;
use std::time::Duration;

use rustix::fs::{FlockOperation, flock};
use tokio_util::sync::CancellationToken;

/// Held until dropped.
#[derive(Debug)]
pub struct WarmLock {
    _file: std::fs::File,
}

/// How often a waiting caller tries again.
const RETRY: Duration = Duration::from_millis(200);

/// Takes the lock at `path`, waiting while someone else holds it; `on_wait` is called once when
/// it has to wait. `Ok(None)`: `cancel` fired while waiting.
pub async fn acquire(
    path: &Path,
    cancel: &CancellationToken,
    on_wait: impl FnOnce(),
) -> Result<Option<WarmLock>, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    let mut on_wait = Some(on_wait);
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Some(WarmLock { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("cannot lock {}: {e}", path.display())),
        }
        if let Some(f) = on_wait.take() {
            f();
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = cancel.cancelled() => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_user_waits_until_the_first_is_done() {
        let dir = tempfile::tempdir().expect("test");
        let path = dir.path().join("r").join("lock");
        let cancel = CancellationToken::new();
        let first = acquire(&path, &cancel, || {})
            .await
            .expect("test")
            .expect("test");
        let waited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let second = {
            let (path, cancel, waited) = (path.clone(), cancel.clone(), waited.clone());
            tokio::spawn(async move {
                acquire(&path, &cancel, || {
                    waited.store(true, std::sync::atomic::Ordering::SeqCst)
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !second.is_finished(),
            "the second user got the lock while it was held"
        );
        assert!(waited.load(std::sync::atomic::Ordering::SeqCst));
        drop(first);
        let got = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second user never got the lock")
            .expect("test")
            .expect("test");
        assert!(got.is_some());
    }

    #[tokio::test]
    async fn waiting_ends_on_cancel() {
        let dir = tempfile::tempdir().expect("test");
        let path = dir.path().join("lock");
        let cancel = CancellationToken::new();
        let _first = acquire(&path, &cancel, || {})
            .await
            .expect("test")
            .expect("test");
        let other = CancellationToken::new();
        other.cancel();
        assert!(acquire(&path, &other, || {}).await.expect("test").is_none());
    }
}
