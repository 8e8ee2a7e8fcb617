//! Polling with deadlines.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 20 ms until it returns `Some`, or fails after `timeout`
/// with `what` in the message.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ends the test process if it is still running after `limit`: a hung test
/// must fail the run, not stall CI. Call it at the start of each test of a
/// binary; only the first call starts the watchdog.
pub fn watchdog(limit: Duration) {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            #[allow(clippy::print_stderr)]
            {
                eprintln!("watchdog: the test binary ran for more than {limit:?}; a test hung");
            }
            std::process::exit(101);
        });
    });
}
