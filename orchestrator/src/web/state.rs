//! What every handler gets: the store, the DAG folder, the runs this process drives, the cron
//! scheduler's view of schedules, the backfills, the security rules and the metrics.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::error::WebError;
use super::metrics::Metrics;
use super::security::SecurityConfig;
use crate::cron::backfill::Backfills;
use crate::cron::{CatchUp, CronScheduler, DagFolder, Launcher};
use crate::scheduler::{Engine, EngineSettings};
use crate::store::Store;

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    folder: Arc<DagFolder>,
    launcher: Launcher,
    cron: Arc<CronScheduler>,
    backfills: Backfills,
    log_dir: PathBuf,
    security: SecurityConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

/// The state shared by handlers; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

impl AppState {
    /// State over `store`, running tasks with `settings`, scheduling the DAGs in `folder` with the
    /// catch-up `policy`; runs stop when `shutdown` fires. The cron loop is not started: spawn
    /// `state.cron().run(token)` (the server does).
    pub fn new(
        store: Arc<dyn Store>,
        settings: EngineSettings,
        folder: Arc<DagFolder>,
        security: SecurityConfig,
        policy: CatchUp,
        shutdown: CancellationToken,
    ) -> Self {
        let log_dir = settings.log_dir.clone();
        let engine = Engine::new(store.clone(), settings);
        let metrics = Metrics::new().with_notifications(engine.notifier().outcomes());
        // Not a child of `shutdown`: when the server stops, `serve_on` decides whether its runs
        // are cancelled or left resumable.
        let launcher = Launcher::new(engine, CancellationToken::new());
        let metrics = metrics.with_sharing(launcher.counters());
        let cron = Arc::new(CronScheduler::new(folder.clone(), launcher.clone(), policy));
        Self(Arc::new(Inner {
            store,
            folder,
            launcher,
            cron,
            backfills: Backfills::default(),
            log_dir,
            security,
            metrics: Arc::new(metrics),
            shutdown,
        }))
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    /// The DAG files.
    pub fn folder(&self) -> &Arc<DagFolder> {
        &self.0.folder
    }

    /// The runs this process drives.
    pub fn launcher(&self) -> &Launcher {
        &self.0.launcher
    }

    /// The cron scheduler.
    pub fn cron(&self) -> &Arc<CronScheduler> {
        &self.0.cron
    }

    /// The backfills this server drives.
    pub fn backfills(&self) -> &Backfills {
        &self.0.backfills
    }

    /// Where try logs live.
    pub fn log_dir(&self) -> &Path {
        &self.0.log_dir
    }

    /// The request rules.
    pub fn security(&self) -> &SecurityConfig {
        &self.0.security
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// Fires when the server shuts down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    /// Runs `f` (store reads, file reads) on the blocking pool.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&AppState) -> Result<T, WebError> + Send + 'static,
    ) -> Result<T, WebError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this)).await?
    }
}
