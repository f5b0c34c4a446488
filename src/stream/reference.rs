//! Reference tables: a map loaded from a file or a SQL query, joined with every batch (Spark's
//! TransformBlacklist joins each batch with a blacklist RDD), reloaded on an interval, and
//! deterministic through crashes (invariant 3).
//!
//! A [`ReferenceTable`] is read by [`DStream::transform_with`] (the whole batch with the table)
//! or [`DStream::left_outer_join_reference`] (each item with its key's entry). Before a batch
//! runs, the job makes the table's version for that batch current ([`prepare_all`]); the
//! operators then read it synchronously. How a version is chosen, and why a replayed batch gets
//! the version its first run used, is in [`versions`].

mod versions;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::blocking::run_blocking;
use crate::error::{Error, Result};
use crate::plan::{BatchTime, interval_millis};
use crate::sink::{Dialect, SinkPool, SqlValue};

use super::dstream::{BoxError, DStream, Data, Key, Persist, lock};
use versions::Version;

pub use crate::sink::SqlRow;

type ParseLine<K, V> = dyn Fn(&str) -> Result<Option<(K, V)>, BoxError> + Send + Sync;
type FetchRows<K, V> = dyn Fn(SinkPool, String, Vec<SqlValue>) -> BoxFuture<'static, Result<Vec<(K, V)>, sqlx::Error>>
    + Send
    + Sync;

/// Where a table is loaded from.
enum Source<K, V> {
    File {
        path: PathBuf,
        parse: Arc<ParseLine<K, V>>,
    },
    Sql {
        url: String,
        query: String,
        params: Vec<SqlValue>,
        fetch: Arc<FetchRows<K, V>>,
    },
}

impl<K, V> Clone for Source<K, V> {
    fn clone(&self) -> Self {
        match self {
            Self::File { path, parse } => Self::File {
                path: path.clone(),
                parse: Arc::clone(parse),
            },
            Self::Sql {
                url,
                query,
                params,
                fetch,
            } => Self::Sql {
                url: url.clone(),
                query: query.clone(),
                params: params.clone(),
                fetch: Arc::clone(fetch),
            },
        }
    }
}

/// What a table was built with.
struct Config<K, V> {
    id: String,
    source: Source<K, V>,
    refresh: Option<Duration>,
    /// A builder method that does not apply to this table, reported when the program runs.
    misuse: Option<String>,
}

impl<K, V> Clone for Config<K, V> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            source: self.source.clone(),
            refresh: self.refresh,
            misuse: self.misuse.clone(),
        }
    }
}

/// A table of reference data joined with every batch, e.g. a blacklist: a map from `K` to `V`
/// loaded from a file or a SQL query at the first batch, and reloaded on an interval with
/// [`refresh_every`](Self::refresh_every).
///
/// Unlike a map captured by a [`transform`](DStream::transform) closure, a reference table may
/// change while the pipeline runs and still keep batches deterministic (invariant 3):
///
/// - it is reloaded at batch times, never by the clock: at the first batch at or after each
///   multiple of the refresh interval (in epoch milliseconds, like window slides);
/// - each loaded version is saved in the checkpoint directory
///   (`reference/<id>/<batch time>.version`) before any batch uses it, and a batch uses the
///   newest version loaded at or before its time. A batch replayed after a crash therefore
///   finds the version its first run used on disk, and is never given a newer one;
/// - a reload that fails (the file is missing or has a bad line, the database is down) keeps
///   the version in force, with a warning, and is tried again at the next refresh; only the
///   very first load must succeed;
/// - versions are deleted once no replay can need them (older than the version in force at
///   the oldest snapshot kept).
///
/// Without `refresh_every` the table is loaded once, at the first batch, and that version is
/// kept for the life of the checkpoint. The id names the table's versions in the checkpoint:
/// keep it when the program changes, or replayed batches lose their versions.
///
/// ```
/// use std::time::Duration;
/// use weir::stream::{DStream, ReferenceTable};
///
/// # fn example(clicks: DStream<(String, String)>) {
/// // `<user> <true|false>` per line; `#` starts a comment.
/// let blacklist = ReferenceTable::from_file("blacklist", "/etc/ads/blacklist.txt", |line| {
///     if line.starts_with('#') {
///         return Ok(None);
///     }
///     let (user, blocked) = line.split_once(' ').ok_or("expected `<user> <true|false>`")?;
///     Ok(Some((user.to_owned(), blocked.trim().parse::<bool>()?)))
/// })
/// .refresh_every(Duration::from_secs(60));
///
/// let billed = clicks
///     .left_outer_join_reference(&blacklist)
///     .filter(|(_, (_, blocked))| *blocked != Some(true))
///     .map(|(_, (click, _))| click);
/// # }
/// ```
pub struct ReferenceTable<K, V> {
    inner: Arc<Table<K, V>>,
}

impl<K, V> std::fmt::Debug for ReferenceTable<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceTable")
            .field("id", &self.inner.config.id)
            .field("refresh", &self.inner.config.refresh)
            .finish_non_exhaustive()
    }
}

impl<K: Key, V: Persist> ReferenceTable<K, V> {
    fn new(config: Config<K, V>) -> Self {
        Self {
            inner: Arc::new(Table {
                config,
                state: Mutex::new(TableState::default()),
                pool: Mutex::new(None),
            }),
        }
    }

    /// A table read from the text file at `path`: `parse` is called with each line that is not
    /// blank and returns its entry, or `None` to skip the line (a comment, a header). A later
    /// entry for a key replaces an earlier one. An error stops the first load, or keeps the
    /// previous version at a refresh, and names the file and line.
    ///
    /// `id` (1 to 100 of `a-z A-Z 0-9 . _ -`, unique in the program) names the table's
    /// versions in the checkpoint.
    pub fn from_file(
        id: impl Into<String>,
        path: impl Into<PathBuf>,
        parse: impl Fn(&str) -> Result<Option<(K, V)>, BoxError> + Send + Sync + 'static,
    ) -> Self {
        Self::new(Config {
            id: id.into(),
            source: Source::File {
                path: path.into(),
                parse: Arc::new(parse),
            },
            refresh: None,
            misuse: None,
        })
    }

    /// A table read by `query` from the database at `url` (`postgres://`, `mysql://`,
    /// `mariadb://` or `sqlite:`), each row of type `R` turned into an entry by `entry`. A later
    /// entry for a key replaces an earlier one. Values go into the query as bound parameters
    /// ([`bind`](Self::bind)), written in the database's own placeholder syntax (`$1` on
    /// PostgreSQL, `?` on MySQL and SQLite); never paste them into the query text.
    ///
    /// `id` names the table's versions in the checkpoint, as for
    /// [`from_file`](Self::from_file).
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir::sink::SqlValue;
    /// use weir::stream::ReferenceTable;
    ///
    /// let blacklist: ReferenceTable<String, bool> = ReferenceTable::from_sql(
    ///     "blacklist",
    ///     "postgres://weir@127.0.0.1/ads",
    ///     "SELECT user_name, blocked FROM blacklist WHERE region = $1",
    ///     |(user, blocked): (String, bool)| (user, blocked),
    /// )
    /// .bind(SqlValue::Text("eu".to_owned()))
    /// .refresh_every(Duration::from_secs(30));
    /// ```
    pub fn from_sql<R: SqlRow>(
        id: impl Into<String>,
        url: impl Into<String>,
        query: impl Into<String>,
        entry: impl Fn(R) -> (K, V) + Send + Sync + 'static,
    ) -> Self {
        let entry = Arc::new(entry);
        let fetch = move |pool: SinkPool,
                          sql: String,
                          params: Vec<SqlValue>|
              -> BoxFuture<'static, Result<Vec<(K, V)>, sqlx::Error>> {
            let entry = Arc::clone(&entry);
            Box::pin(async move {
                let rows: Vec<R> = pool.fetch_all(sql, &params).await?;
                Ok(rows.into_iter().map(|row| entry(row)).collect())
            })
        };
        Self::new(Config {
            id: id.into(),
            source: Source::Sql {
                url: url.into(),
                query: query.into(),
                params: Vec::new(),
                fetch: Arc::new(fetch),
            },
            refresh: None,
            misuse: None,
        })
    }

    /// Binds the next parameter of the query (SQL tables only).
    #[must_use]
    pub fn bind(self, value: SqlValue) -> Self {
        self.rebuild(|config| match &mut config.source {
            Source::Sql { params, .. } => params.push(value),
            Source::File { .. } => {
                config.misuse = Some("bind applies to tables read with from_sql".to_owned());
            }
        })
    }

    /// Reloads the table at the first batch at or after every multiple of `every` (a positive
    /// multiple of the batch interval).
    #[must_use]
    pub fn refresh_every(self, every: Duration) -> Self {
        self.rebuild(|config| config.refresh = Some(every))
    }

    /// A new table with a changed configuration (builder methods never change a table a
    /// program already reads).
    fn rebuild(self, change: impl FnOnce(&mut Config<K, V>)) -> Self {
        let mut config = self.inner.config.clone();
        change(&mut config);
        Self::new(config)
    }

    /// The table's id.
    pub fn id(&self) -> &str {
        &self.inner.config.id
    }
}

/// A table, shared by the operators that read it and the job that loads it.
struct Table<K, V> {
    config: Config<K, V>,
    state: Mutex<TableState<K, V>>,
    /// The connection pool of a SQL table, made at its first load.
    pool: Mutex<Option<SinkPool>>,
}

/// What a table holds while the program runs.
struct TableState<K, V> {
    /// The times of the versions in the checkpoint; `None` until listed.
    on_disk: Option<std::collections::BTreeSet<BatchTime>>,
    /// The version of the batch being run.
    current: Option<Version<K, V>>,
    /// The batch `current` was made current for.
    prepared_for: Option<BatchTime>,
}

impl<K, V> Default for TableState<K, V> {
    fn default() -> Self {
        Self {
            on_disk: None,
            current: None,
            prepared_for: None,
        }
    }
}

/// A reference table as the job sees it: loaded before each batch.
pub(crate) trait Refresh: Send + Sync {
    /// The table's id.
    fn id(&self) -> &str;

    /// Makes the table's version for the batch at `t` current, loading the table (and saving
    /// the new version under `checkpoint`) when it is due.
    fn prepare(
        self: Arc<Self>,
        checkpoint: PathBuf,
        t: BatchTime,
    ) -> BoxFuture<'static, Result<()>>;
}

/// Prepares every table for the batch at `t`, before its operators run.
pub(crate) async fn prepare_all(
    tables: &[Arc<dyn Refresh>],
    checkpoint: &Path,
    t: BatchTime,
) -> Result<()> {
    for table in tables {
        Arc::clone(table)
            .prepare(checkpoint.to_path_buf(), t)
            .await?;
    }
    Ok(())
}

impl<K: Key, V: Persist> Refresh for Table<K, V> {
    fn id(&self) -> &str {
        &self.config.id
    }

    fn prepare(
        self: Arc<Self>,
        checkpoint: PathBuf,
        t: BatchTime,
    ) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move { self.prepare_at(&checkpoint, t).await })
    }
}

impl<K: Key, V: Persist> Table<K, V> {
    fn state(&self) -> MutexGuard<'_, TableState<K, V>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The table for the batch at `t`, which the job prepared.
    fn entries_for(&self, t: BatchTime) -> Result<Arc<BTreeMap<K, V>>> {
        let state = self.state();
        match (&state.current, state.prepared_for) {
            (Some(version), Some(prepared)) if prepared == t => Ok(Arc::clone(&version.entries)),
            _ => Err(Error::Batch {
                batch_time: t,
                message: format!(
                    "reference table {:?} was not loaded for this batch; this is a bug in weir, please report it",
                    self.config.id
                ),
            }),
        }
    }

    /// The checks made when a program reads the table.
    fn check(&self, batch_interval: Duration) -> Result<()> {
        let id = &self.config.id;
        let plain = !id.is_empty()
            && id.len() <= 100
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        let key = || format!("reference table {id:?}");
        if !plain {
            return Err(Error::config(
                key(),
                "the id must be 1 to 100 of a-z A-Z 0-9 . _ - and not start with a dot",
            ));
        }
        if let Some(misuse) = &self.config.misuse {
            return Err(Error::config(key(), misuse.clone()));
        }
        if let Some(every) = self.config.refresh {
            let (ms, interval) = (
                interval_millis(every),
                interval_millis(batch_interval).max(1),
            );
            if ms <= 0 || ms % interval != 0 {
                return Err(Error::config(
                    key(),
                    format!(
                        "refresh_every {} is not a positive multiple of the batch interval {}",
                        humantime::format_duration(every),
                        humantime::format_duration(batch_interval)
                    ),
                ));
            }
        }
        if let Source::Sql { url, .. } = &self.config.source
            && Dialect::from_url(url).is_none()
        {
            return Err(Error::config(
                key(),
                "the url must start with postgres://, postgresql://, mysql://, mariadb:// or sqlite:",
            ));
        }
        Ok(())
    }

    async fn prepare_at(&self, checkpoint: &Path, t: BatchTime) -> Result<()> {
        let dir = versions::table_dir(checkpoint, &self.config.id);
        let in_force = self.version_in_force(&dir, t).await?;
        if let Some(v) = in_force {
            self.make_current(&dir, v).await?;
            let mut state = self.state();
            let next_refresh = state.current.as_ref().and_then(|c| c.next_refresh);
            if !versions::expired(next_refresh, t) {
                state.prepared_for = Some(t);
                return Ok(());
            }
        }
        let entries = match self.load(t).await {
            Ok(entries) => Arc::new(entries),
            // `current` is the version in force, if there is one.
            Err(error) => match self.state().current.as_ref().filter(|_| in_force.is_some()) {
                Some(kept) => {
                    tracing::warn!(
                        message = "Could not reload a reference table; the version in force stays until the next refresh.",
                        table = %self.config.id,
                        batch_time = %t,
                        %error,
                    );
                    Arc::clone(&kept.entries)
                }
                None => return Err(error),
            },
        };
        let version = Version {
            loaded_at: t,
            next_refresh: versions::next_refresh(t, self.config.refresh),
            entries,
        };
        self.save(checkpoint, dir, version).await
    }

    /// The time of the version in force at `t`, listing the versions in `dir` the first time.
    async fn version_in_force(&self, dir: &Path, t: BatchTime) -> Result<Option<BatchTime>> {
        if self.state().on_disk.is_none() {
            let from = dir.to_path_buf();
            let found = run_blocking("listing a reference table's versions", move || {
                versions::list(&from)
            })
            .await?;
            self.state().on_disk = Some(found);
        }
        let state = self.state();
        Ok(state
            .on_disk
            .as_ref()
            .and_then(|on_disk| versions::in_force(on_disk, t)))
    }

    /// Saves a new version durably, makes it current, and removes versions no replay needs.
    async fn save(&self, checkpoint: &Path, dir: PathBuf, version: Version<K, V>) -> Result<()> {
        let (t, entries) = (version.loaded_at, version.entries.len());
        let (to, id) = (dir.clone(), self.config.id.clone());
        let version = run_blocking("saving a reference table version", move || {
            versions::write(&to, &id, &version).map(|()| version)
        })
        .await?;
        tracing::info!(
            message = "Loaded a reference table.",
            table = %self.config.id,
            batch_time = %t,
            entries,
        );
        let on_disk = {
            let mut state = self.state();
            let on_disk = state.on_disk.get_or_insert_default();
            on_disk.insert(t);
            let on_disk = on_disk.clone();
            state.current = Some(version);
            state.prepared_for = Some(t);
            on_disk
        };
        self.remove_obsolete(checkpoint, dir, on_disk).await;
        Ok(())
    }

    /// Makes version `v` current, reading it from the checkpoint unless it already is.
    async fn make_current(&self, dir: &Path, v: BatchTime) -> Result<()> {
        if self
            .state()
            .current
            .as_ref()
            .is_some_and(|c| c.loaded_at == v)
        {
            return Ok(());
        }
        let (from, id) = (dir.to_path_buf(), self.config.id.clone());
        let version = run_blocking("reading a reference table version", move || {
            versions::read::<K, V>(&from, &id, v)
        })
        .await?;
        self.state().current = Some(version);
        Ok(())
    }

    /// Deletes the versions no replay can need; a failure only costs disk space.
    async fn remove_obsolete(
        &self,
        checkpoint: &Path,
        dir: PathBuf,
        on_disk: std::collections::BTreeSet<BatchTime>,
    ) {
        let checkpoint = checkpoint.to_path_buf();
        let removed = run_blocking("removing old reference table versions", move || {
            let obsolete = versions::obsolete(&on_disk, versions::oldest_snapshot(&checkpoint)?);
            versions::remove(&dir, &obsolete);
            Ok(obsolete)
        })
        .await;
        match removed {
            Ok(removed) => {
                if let Some(on_disk) = self.state().on_disk.as_mut() {
                    for t in removed {
                        on_disk.remove(&t);
                    }
                }
            }
            Err(error) => tracing::warn!(
                message = "Cannot remove old reference table versions.",
                table = %self.config.id,
                %error,
            ),
        }
    }

    /// Reads the table from its source.
    async fn load(&self, t: BatchTime) -> Result<BTreeMap<K, V>> {
        let id = self.config.id.clone();
        let entries = match &self.config.source {
            Source::File { path, parse } => {
                let (path, parse) = (path.clone(), Arc::clone(parse));
                run_blocking("reading a reference table file", move || {
                    read_file(&id, &path, &*parse, t)
                })
                .await?
            }
            Source::Sql {
                url,
                query,
                params,
                fetch,
            } => {
                let pool = self.pool(url)?;
                fetch(pool, query.clone(), params.clone())
                    .await
                    .map_err(|source| Error::Database {
                        context: format!(
                            "loading reference table {id:?} for batch {t} with {query:?}"
                        ),
                        source,
                    })?
            }
        };
        Ok(entries.into_iter().collect())
    }

    /// The table's connection pool (one connection, made lazily).
    fn pool(&self, url: &str) -> Result<SinkPool> {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = &*pool {
            return Ok(pool.clone());
        }
        let key = || format!("reference table {:?}", self.config.id);
        let dialect = Dialect::from_url(url)
            .ok_or_else(|| Error::config(key(), "the url names no database weir speaks"))?;
        let made = SinkPool::connect_lazy(url, dialect, 1).map_err(|e| match e {
            Error::Config { message, .. } => Error::config(key(), message),
            other => other,
        })?;
        *pool = Some(made.clone());
        Ok(made)
    }
}

/// The entries of the file at `path`, line by line.
fn read_file<K, V>(
    id: &str,
    path: &Path,
    parse: &ParseLine<K, V>,
    t: BatchTime,
) -> Result<Vec<(K, V)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut entries = Vec::new();
    for (n, line) in (1..).zip(text.lines()) {
        if line.trim().is_empty() {
            continue;
        }
        match parse(line) {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => {}
            Err(e) => {
                return Err(Error::Batch {
                    batch_time: t,
                    message: format!(
                        "reference table {id:?}: {}:{n}: {e}; fix the line (a running pipeline keeps its previous version until the next refresh)",
                        path.display()
                    ),
                });
            }
        }
    }
    Ok(entries)
}

impl<T: Data> DStream<T> {
    /// Adds `table` to the tables the program loads before each batch; returns it.
    fn read_reference<K: Key, V: Persist>(&self, table: &ReferenceTable<K, V>) -> Arc<Table<K, V>> {
        let mut graph = lock(&self.graph);
        if let Err(error) = table.inner.check(graph.batch_interval) {
            graph.error(error);
        }
        let same =
            |r: &Arc<dyn Refresh>| std::ptr::addr_eq(Arc::as_ptr(r), Arc::as_ptr(&table.inner));
        if !graph.references.iter().any(same) {
            if graph.references.iter().any(|r| r.id() == table.id()) {
                let error = Error::config(
                    format!("reference table {:?}", table.id()),
                    "two reference tables have this id; ids must be unique",
                );
                graph.error(error);
            }
            let erased: Arc<dyn Refresh> = Arc::clone(&table.inner) as Arc<dyn Refresh>;
            graph.references.push(erased);
        }
        Arc::clone(&table.inner)
    }

    /// A whole batch at once with a reference table (Spark's `transform` with a joined RDD):
    /// `f` gets the batch time, every item of the batch (partition by partition, in order) and
    /// the table's version for this batch; its result is one partition, `Keyed(0)`. A batch
    /// replayed after a crash gets the same version (see [`ReferenceTable`]).
    ///
    /// ```
    /// # use weir::stream::{DStream, ReferenceTable};
    /// # fn example(clicks: DStream<(String, String)>, blacklist: ReferenceTable<String, bool>) {
    /// let billed = clicks.transform_with(&blacklist, |_, clicks, blacklist| {
    ///     clicks
    ///         .into_iter()
    ///         .filter(|(user, _)| blacklist.get(user) != Some(&true))
    ///         .map(|(_, click)| click)
    ///         .collect::<Vec<_>>()
    /// });
    /// # }
    /// ```
    pub fn transform_with<K: Key, V: Persist, U: Data>(
        &self,
        table: &ReferenceTable<K, V>,
        f: impl Fn(BatchTime, Vec<T>, &BTreeMap<K, V>) -> Vec<U> + Send + Sync + 'static,
    ) -> DStream<U> {
        let table = self.read_reference(table);
        self.try_transform(move |t, items| {
            let entries = table.entries_for(t)?;
            Ok(f(t, items, &entries))
        })
    }
}

impl<K: Key, V: Data> DStream<(K, V)> {
    /// Each `(key, value)` with the reference table's entry for its key, or `None` (Spark's
    /// `leftOuterJoin` with a reference RDD), keeping the stream's partitioning and order. A
    /// batch replayed after a crash gets the same version of the table (see
    /// [`ReferenceTable`]).
    pub fn left_outer_join_reference<W: Persist>(
        &self,
        table: &ReferenceTable<K, W>,
    ) -> DStream<(K, (V, Option<W>))> {
        let table = self.read_reference(table);
        self.try_map_partitions(move |cx, items| {
            let entries = table.entries_for(cx.batch_time)?;
            Ok(items
                .into_iter()
                .map(|(key, value)| {
                    let entry = entries.get(&key).cloned();
                    (key, (value, entry))
                })
                .collect())
        })
    }
}
