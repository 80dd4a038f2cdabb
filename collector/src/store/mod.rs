//! The embedded redb store: durable events, incidents, clusters and agents.
//!
//! redb is synchronous and allows one writer. All writes go through one
//! writer thread that commits every queued request in one transaction (group
//! commit: one fsync per group, not per request) and answers each request
//! only after that commit returned (invariant 2). Reads run in
//! `spawn_blocking` on their own read transactions.

mod access;
mod access_read;
mod blocks;
mod cluster;
mod compact;
mod dedup;
mod postings;
mod prepare;
mod reader;
mod recent;
pub mod schema;
mod writer;

pub use access::{AccessJob, AccessOp, AccessOutcome, PurgeOutcome, Refusal, check_token};
pub use access_read::AuditQuery;
pub use prepare::PreparedBatch;
pub use reader::{ClusterView, EventQuery, IncidentQuery, IncidentView, Page, Position, StoredEvent};
pub use writer::{IngestOutcome, RetentionOutcome};

use crate::tls::AgentIdentity;
use podwarn_shared::IngestBatch;
use schema::AgentRecord;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (usually a running `serve`) has the store open.
    #[error("the store {0} is in use by another podwarn-collector process")]
    Locked(PathBuf),
    /// The database file could not be opened.
    #[error("opening the store {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: redb::DatabaseError,
    },
    /// A read or write failed (disk full, I/O error …); nothing was committed.
    #[error("storage error: {0}")]
    Storage(String),
    /// A stored record could not be decoded.
    #[error(transparent)]
    Corrupt(#[from] schema::DecodeError),
    /// The writer thread is gone (the collector is shutting down).
    #[error("the store is shutting down")]
    Closed,
    /// The agent sending data is not known, or was revoked.
    #[error("{0}")]
    AgentRefused(String),
    /// An access change was refused; nothing was written.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl StoreError {
    fn storage(e: impl std::fmt::Display) -> Self {
        Self::Storage(e.to_string())
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { Self::storage(e) }
        }
    )*};
}
storage_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A `Result` of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle on the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<DbSlot>,
    jobs: mpsc::Sender<writer::Job>,
    path: PathBuf,
    strings: Arc<compact::Resolver>,
}

/// How many requests may wait for the writer before senders queue up.
const WRITE_QUEUE: usize = 1024;

/// The open database, shared by readers; empty while the writer reopens it
/// after an I/O error (redb refuses every transaction after one until the
/// file is reopened).
type DbSlot = std::sync::RwLock<Option<Arc<redb::Database>>>;

/// How to open the file, again if need be.
pub(crate) struct Opener {
    path: PathBuf,
    cache_bytes: usize,
}

impl Opener {
    fn open(&self) -> Result<redb::Database> {
        redb::Database::builder()
            .set_cache_size(self.cache_bytes)
            .create(&self.path)
            .map_err(|source| match source {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(self.path.clone()),
                source => StoreError::Open {
                    path: self.path.clone(),
                    source,
                },
            })
    }
}
/// Page cache of short-lived openers (CLI commands); `serve` sets its own.
const DEFAULT_CACHE: usize = 64 << 20;

impl Store {
    /// Opens (or creates) the store at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_cache(path, DEFAULT_CACHE)
    }

    /// Opens the store with at most `cache_bytes` of page cache.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self> {
        let opener = Opener {
            path: path.into(),
            cache_bytes,
        };
        let db = Arc::new(opener.open()?);
        let slot = Arc::new(std::sync::RwLock::new(Some(db.clone())));
        let (jobs, rx) = mpsc::channel(WRITE_QUEUE);
        writer::start(db, rx, slot.clone(), opener)?;
        Ok(Self {
            db: slot,
            jobs,
            path: path.into(),
            strings: Arc::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores a batch under the sender's certified identity. Returns once it
    /// is durably committed.
    pub async fn ingest(&self, identity: AgentIdentity, batch: IngestBatch) -> Result<IngestOutcome> {
        let cluster = identity.cluster.clone();
        let batch = tokio::task::spawn_blocking(move || PreparedBatch::of(&cluster, batch))
            .await
            .map_err(|_| StoreError::Storage("preparing the batch failed".into()))?;
        self.ingest_prepared(identity, batch).await
    }

    /// [`Store::ingest`] of a batch the caller prepared with
    /// [`PreparedBatch::of`] (CPU work, for a blocking thread).
    pub async fn ingest_prepared(&self, identity: AgentIdentity, batch: PreparedBatch) -> Result<IngestOutcome> {
        self.submit(|reply| writer::Job::Ingest { identity, batch, reply })
            .await?
    }

    /// Records a newly issued agent certificate (audited as issued by `local`).
    pub async fn register_agent(&self, agent: AgentRecord) -> Result<()> {
        let job = AccessJob {
            op: AccessOp::IssueCert(agent),
            actor: "local".into(),
            source: "local".into(),
        };
        self.access(job).await.map(drop)
    }

    /// Applies one access change (tokens, enrollment, renewal, revocation,
    /// cluster removal, API keys) with its audit entry, in one transaction.
    pub async fn access(&self, job: AccessJob) -> Result<AccessOutcome> {
        self.submit(|reply| writer::Job::Access { job, reply }).await?
    }

    /// Revokes a cluster's agents and tokens; with `purge`, then deletes its
    /// events, incidents and dedup keys in small transactions.
    pub async fn remove_cluster(&self, job: AccessJob, purge: bool) -> Result<(AccessOutcome, PurgeOutcome)> {
        let AccessOp::RemoveCluster { cluster, .. } = &job.op else {
            return Err(StoreError::Storage("remove_cluster needs a RemoveCluster job".into()));
        };
        let cluster = cluster.clone();
        let (actor, source) = (job.actor.clone(), job.source.clone());
        let removed = self.access(job).await?;
        let mut total = PurgeOutcome::default();
        if !purge {
            return Ok((removed, total));
        }
        loop {
            let step = AccessJob {
                op: AccessOp::PurgeStep {
                    cluster: cluster.clone(),
                },
                actor: actor.clone(),
                source: source.clone(),
            };
            let AccessOutcome::Purged(out) = self.access(step).await? else {
                break;
            };
            total.events += out.events;
            total.incidents += out.incidents;
            if !out.more {
                break;
            }
        }
        Ok((removed, total))
    }

    /// Deletes events and incidents last seen before `cutoff_us`, in small
    /// transactions. Returns how much was deleted.
    pub async fn apply_retention(&self, cutoff_us: i64) -> Result<RetentionOutcome> {
        let mut total = RetentionOutcome::default();
        loop {
            let step: RetentionOutcome = self
                .submit(|reply| writer::Job::Retention { cutoff_us, reply })
                .await??;
            total.events += step.events;
            total.incidents += step.incidents;
            if !step.more {
                return Ok(total);
            }
        }
    }

    async fn submit<T>(&self, job: impl FnOnce(oneshot::Sender<T>) -> writer::Job) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(job(tx)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self
            .db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Storage("the store is reopening after an I/O error: retry shortly".into()))?;
        tokio::task::spawn_blocking(move || {
            use redb::ReadableDatabase;
            let txn = db.begin_read()?;
            f(&txn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// A page of events matching `query`, newest activity first.
    pub async fn events(&self, query: EventQuery) -> Result<Page<StoredEvent>> {
        let strings = self.strings.clone();
        self.read(move |txn| reader::events(txn, &query, &strings)).await
    }

    /// A page of incidents matching `query`, most recently seen first.
    pub async fn incidents(&self, query: IncidentQuery) -> Result<Page<IncidentView>> {
        self.read(move |txn| reader::incidents(txn, &query)).await
    }

    /// One incident by id.
    pub async fn incident(
        &self,
        id: u64,
        now_us: i64,
        active_window: std::time::Duration,
    ) -> Result<Option<IncidentView>> {
        self.read(move |txn| reader::incident(txn, id, now_us, active_window))
            .await
    }

    /// Every cluster with its agents.
    pub async fn clusters(&self) -> Result<Vec<ClusterView>> {
        self.read(reader::clusters).await
    }

    /// Every agent record.
    pub async fn agents(&self) -> Result<Vec<AgentRecord>> {
        self.read(reader::agents).await
    }

    /// One enrollment token.
    pub async fn token(&self, id: String) -> Result<Option<schema::TokenRecord>> {
        self.read(move |txn| access_read::get(txn, schema::TOKENS, &id)).await
    }

    /// Every enrollment token.
    pub async fn tokens(&self) -> Result<Vec<schema::TokenRecord>> {
        self.read(|txn| access_read::all(txn, schema::TOKENS)).await
    }

    /// One API key.
    pub async fn api_key(&self, id: String) -> Result<Option<schema::ApiKeyRecord>> {
        self.read(move |txn| access_read::get(txn, schema::API_KEYS, &id)).await
    }

    /// Every API key.
    pub async fn api_keys(&self) -> Result<Vec<schema::ApiKeyRecord>> {
        self.read(|txn| access_read::all(txn, schema::API_KEYS)).await
    }

    /// A page of the audit log, newest first.
    pub async fn audit(&self, query: AuditQuery) -> Result<Page<(u64, schema::AuditRecord)>> {
        self.read(move |txn| access_read::audit(txn, &query)).await
    }

    /// Bytes the database file takes on disk.
    pub fn size_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod access_tests;
#[cfg(test)]
mod tests;

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}
