//! The one shutdown signal of a podwarn process.

use std::future::Future;
use tokio::signal::unix::{SignalKind, signal};

/// Registers for SIGTERM and SIGINT now, so that from here on neither kills
/// the process (even while it is still starting: connecting, opening its
/// store), and returns what resolves when one of them arrives. Call it first
/// thing inside the runtime.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutdown signal received");
    })
}
