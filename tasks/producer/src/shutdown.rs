//! Stopping on SIGINT/SIGTERM: the first signal sets a flag the pipeline checks between chunks
//! (reading stops, enqueued messages are still awaited and counted); a second one exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Exit code after a second signal: the shell's 128 + SIGINT.
const FORCED_EXIT: i32 = 130;

/// A flag set by the first SIGINT or SIGTERM, watched on a thread of its own.
pub fn stop_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // Registering inside the runtime now means a signal that arrives right after this returns
    // is already caught.
    let (mut term, mut int) = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut seen = 0;
                loop {
                    let name = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                    };
                    seen += 1;
                    if seen > 1 {
                        tracing::warn!(signal = name, "Second signal: exiting now");
                        std::process::exit(FORCED_EXIT);
                    }
                    tracing::warn!(
                        signal = name,
                        "Stopping: no more rows are read; waiting for the enqueued ones"
                    );
                    flag.store(true, Ordering::Relaxed);
                }
            });
        })?;
    Ok(stop)
}
