//! Group commit on SQLite: concurrent write transactions share one durable `COMMIT`.
//!
//! SQLite has one writer, and with `synchronous=FULL` each `COMMIT` waits for the disk. Writers
//! take the one connection in turn (a fair queue); the first of a batch opens it with
//! `BEGIN IMMEDIATE`, each later one runs inside its own `SAVEPOINT`, so a failure rolls back
//! only itself. Finishing its part, an operation releases its savepoint, hands the connection to
//! the next in the queue and waits: the committer task queues for the connection too, and by the
//! time its turn comes every operation that was queued before it has joined the batch; it
//! commits once, then answers each. Nobody is answered before the commit that holds its writes
//! is on disk (I5): a failed `COMMIT` fails every operation in the batch (each a 503, nothing
//! written), never some of them.
//!
//! A transaction dropped without `commit` (an error, or a decision that writes nothing) rolls
//! back to its savepoint — or the whole batch, if it opened it and so holds nobody else's
//! writes. What such an operation read may include a batch-mate's writes that are not on disk
//! yet: it leaves the batch's number in its request's [`fenced`] scope, and the server waits for
//! that batch ([`crate::Durability::durable`]) before it answers (a failed batch turns the
//! answer into a 503).
//!
//! The finishing steps (release, roll back, commit) run in spawned tasks: a caller that goes
//! away mid-way (a client hanging up) never leaves the batch open or its waiters waiting.

use crate::{Result, StoreError};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Executor};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, oneshot, watch};

/// How long a write transaction may queue for the writer.
const WRITER_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The one writer connection, its batch, and the committer that ends each batch.
pub(crate) struct GroupWriter {
    state: Arc<Mutex<WriterState>>,
    /// Wakes the committer: an operation has finished its part of the open batch.
    wake: Arc<Notify>,
    /// The batches whose fate is known.
    settled: watch::Sender<Settled>,
    /// Transactions waiting for the writer right now.
    queued: AtomicUsize,
    closed: Arc<AtomicBool>,
}

/// What the connection is doing, under the queue's lock.
struct WriterState {
    options: SqliteConnectOptions,
    /// `None` after a failure left it in a state we cannot trust; reopened on next use.
    conn: Option<SqliteConnection>,
    batch: Option<Batch>,
    batches: u64,
}

/// One outer transaction and the operations waiting for its commit.
struct Batch {
    number: u64,
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
}

/// Every batch up to `through` has committed or failed; `last_failed` is the highest that failed.
#[derive(Clone, Copy, Default)]
struct Settled {
    through: u64,
    last_failed: u64,
}

impl GroupWriter {
    /// Opens the writer connection and starts its committer.
    pub(crate) async fn connect(options: SqliteConnectOptions) -> Result<Arc<Self>> {
        let conn = options.connect().await?;
        let writer = Arc::new(GroupWriter {
            state: Arc::new(Mutex::new(WriterState {
                options,
                conn: Some(conn),
                batch: None,
                batches: 0,
            })),
            wake: Arc::new(Notify::new()),
            settled: watch::Sender::new(Settled::default()),
            queued: AtomicUsize::new(0),
            closed: Arc::new(AtomicBool::new(false)),
        });
        tokio::spawn(committer(
            Arc::downgrade(&writer.state),
            writer.wake.clone(),
            writer.settled.clone(),
            writer.closed.clone(),
        ));
        Ok(writer)
    }

    /// A write transaction: its place in the queue, then in the open batch (or a new one).
    pub(crate) async fn begin(&self) -> Result<GroupTx> {
        // Under a storm the queue can be long, and waiting is the right answer, not a 5xx; but
        // not forever (a 503 `database_unavailable` after a minute, as the writer pool did).
        let queued = Queued::new(&self.queued);
        let guard = tokio::time::timeout(WRITER_QUEUE_WAIT, self.state.clone().lock_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        drop(queued);
        let mut tx = GroupTx {
            guard: Some(guard),
            role: Role::Outside,
            wake: self.wake.clone(),
            settled: self.settled.clone(),
        };
        let st = tx.state();
        if st.conn.is_none() {
            st.conn = Some(st.options.connect().await?);
        }
        if st.batch.is_none() {
            if st.conn().execute("BEGIN IMMEDIATE").await.is_err() {
                // A connection a failed COMMIT (a full disk) or a cancelled BEGIN left inside a
                // transaction refuses to begin another: start again on a new one (a real
                // failure, e.g. another process holding the lock, fails again and is returned).
                if let Some(conn) = st.conn.take() {
                    let _ = conn.close().await;
                }
                st.conn = Some(st.options.connect().await?);
                st.conn().execute("BEGIN IMMEDIATE").await?;
            }
            st.batches += 1;
            let number = st.batches;
            st.batch = Some(Batch {
                number,
                waiters: Vec::new(),
            });
            tx.role = Role::Opener;
        } else {
            // The role is set only once the savepoint exists: a joiner dropped before has
            // nothing of its own to roll back.
            if let Err(e) = st.conn().execute("SAVEPOINT op").await {
                // The batch's transaction is in a state we cannot vouch for: end it.
                fail_batch(st, &self.settled, &e.to_string()).await;
                return Err(e.into());
            }
            tx.role = Role::Joiner;
        }
        Ok(tx)
    }

    /// Waits until batch `fence` (if any) has settled; an error if it failed (or a later one
    /// did: a spurious 503 is safe, a missed failure would not be).
    pub(crate) async fn durable(&self, fence: Fence) -> Result<()> {
        let n = fence.0;
        if n == 0 {
            return Ok(());
        }
        let mut rx = self.settled.subscribe();
        let settled = *rx
            .wait_for(|s| s.through >= n)
            .await
            .map_err(|_| StoreError::CommitFailed("the writer closed".into()))?;
        if settled.last_failed >= n {
            return Err(StoreError::CommitFailed(
                "a write this answer may have read was not committed".into(),
            ));
        }
        Ok(())
    }

    /// The connection, outside any batch (migrations, which run their own transactions): the
    /// open batch, if any, is committed first. Writers queue while it is held.
    pub(crate) async fn exclusive(&self) -> Result<Exclusive> {
        let mut st = self.state.clone().lock_owned().await;
        commit_batch(&mut st, &self.settled).await;
        if st.conn.is_none() {
            st.conn = Some(st.options.connect().await?);
        }
        Ok(Exclusive(st))
    }

    /// Commits what is open and closes the connection.
    pub(crate) async fn close(&self) {
        let mut st = self.state.lock().await;
        commit_batch(&mut st, &self.settled).await;
        if let Some(conn) = st.conn.take() {
            let _ = conn.close().await;
        }
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// A place in the writer's queue, counted while it is held (also when its waiter goes away).
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Queued(count)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The writer connection held outside any batch (`GroupWriter::exclusive`).
pub(crate) struct Exclusive(OwnedMutexGuard<WriterState>);

impl Exclusive {
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        self.0.conn()
    }
}

impl Drop for GroupWriter {
    fn drop(&mut self) {
        // The committer holds only a weak reference: woken, it finds the writer gone and ends.
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

impl WriterState {
    fn conn(&mut self) -> &mut SqliteConnection {
        self.conn.as_mut().expect("the writer connection is open")
    }
}

/// The committer: woken by an operation that finished its part, it queues for the connection
/// behind everyone already waiting (the queue is fair), so they join the batch first; then it
/// commits the batch once.
async fn committer(
    state: Weak<Mutex<WriterState>>,
    wake: Arc<Notify>,
    settled: watch::Sender<Settled>,
    closed: Arc<AtomicBool>,
) {
    loop {
        wake.notified().await;
        if closed.load(Ordering::SeqCst) {
            return;
        }
        let Some(state) = state.upgrade() else {
            return;
        };
        let mut st = state.lock().await;
        commit_batch(&mut st, &settled).await;
    }
}

/// Commits the open batch (if any) and answers its waiters.
async fn commit_batch(st: &mut WriterState, settled: &watch::Sender<Settled>) {
    let Some(batch) = st.batch.take() else {
        return;
    };
    let size = batch.waiters.len();
    match st.conn().execute("COMMIT").await {
        Ok(_) => {
            // Writes per durable commit: their ratio says what batching bought.
            metrics::counter!("payonce_sqlite_commits_total").increment(1);
            metrics::counter!("payonce_sqlite_committed_writes_total").increment(size as u64);
            settle(settled, batch.number, false);
            for w in batch.waiters {
                let _ = w.send(Ok(()));
            }
        }
        Err(e) => {
            st.batch = Some(batch);
            fail_batch(st, settled, &e.to_string()).await;
        }
    }
}

/// Rolls the open batch back and fails every operation waiting for it.
async fn fail_batch(st: &mut WriterState, settled: &watch::Sender<Settled>, why: &str) {
    tracing::warn!(error = %why, "an SQLite group commit failed; every write in it is rolled back");
    if let Some(conn) = st.conn.as_mut()
        && conn.execute("ROLLBACK").await.is_err()
    {
        // A COMMIT that failed (a full disk) can leave the connection inside a transaction it
        // can no longer end: replace it, or every later write would fail long after the space
        // has returned.
        if let Some(conn) = st.conn.take() {
            let _ = conn.close().await;
        }
    }
    if let Some(batch) = st.batch.take() {
        settle(settled, batch.number, true);
        for w in batch.waiters {
            let _ = w.send(Err(why.to_owned()));
        }
    }
}

fn settle(settled: &watch::Sender<Settled>, number: u64, failed: bool) {
    settled.send_modify(|s| {
        s.through = s.through.max(number);
        if failed {
            s.last_failed = s.last_failed.max(number);
        }
    });
}

/// A write transaction in a batch. Dropped without `commit`, it rolls back (itself only).
pub(crate) struct GroupTx {
    guard: Option<OwnedMutexGuard<WriterState>>,
    role: Role,
    wake: Arc<Notify>,
    settled: watch::Sender<Settled>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Not (or no longer) in a batch.
    Outside,
    /// Opened the batch: nobody else's writes are in it while it runs, so a failure may roll
    /// the whole batch back (no savepoint needed).
    Opener,
    /// Joined an open batch, inside `SAVEPOINT op`.
    Joiner,
}

impl GroupTx {
    fn state(&mut self) -> &mut WriterState {
        self.guard
            .as_mut()
            .expect("the transaction holds the writer")
    }

    /// The connection, for statements.
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        self.state().conn()
    }

    /// Ends this operation's part and waits for the batch's commit.
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        let guard = self.guard.take().expect("the transaction holds the writer");
        let role = std::mem::replace(&mut self.role, Role::Outside);
        let (tell, told) = oneshot::channel();
        let (wake, settled) = (self.wake.clone(), self.settled.clone());
        // Spawned: the release and the hand-over finish even if our caller goes away.
        let handed_over = tokio::spawn(async move {
            let mut guard = guard;
            if role == Role::Joiner
                && let Err(e) = guard.conn().execute("RELEASE op").await
            {
                fail_batch(&mut guard, &settled, &e.to_string()).await;
                return Err(e);
            }
            match guard.batch.as_mut() {
                Some(batch) => batch.waiters.push(tell),
                None => return Err(sqlx::Error::Protocol("the batch ended early".into())),
            }
            drop(guard);
            wake.notify_one();
            Ok(())
        });
        handed_over
            .await
            .map_err(|_| sqlx::Error::WorkerCrashed)??;
        match told.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(sqlx::Error::Protocol(format!("group commit failed: {why}"))),
            Err(_) => Err(sqlx::Error::WorkerCrashed),
        }
    }
}

impl Drop for GroupTx {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        let role = self.role;
        if role == Role::Joiner
            && let Some(batch) = guard.batch.as_ref()
        {
            let number = batch.number;
            let _ = SEEN_UNCOMMITTED.try_with(|seen| seen.set(seen.get().max(number)));
        }
        let (wake, settled) = (self.wake.clone(), self.settled.clone());
        // Rolling back needs the connection (async): a task finishes it, holding the writer
        // until it has, so nobody else runs in between.
        let finish = async move {
            match role {
                Role::Outside => {}
                Role::Opener => {
                    // Nobody else is in the batch: end it, with nothing written.
                    let rolled_back = guard.conn().execute("ROLLBACK").await;
                    if rolled_back.is_err()
                        && let Some(conn) = guard.conn.take()
                    {
                        let _ = conn.close().await;
                    }
                    if let Some(batch) = guard.batch.take() {
                        settle(&settled, batch.number, false);
                        for w in batch.waiters {
                            let _ = w.send(Ok(()));
                        }
                    }
                }
                Role::Joiner => {
                    let undone = guard.conn().execute("ROLLBACK TO op; RELEASE op").await;
                    if let Err(e) = undone {
                        fail_batch(&mut guard, &settled, &e.to_string()).await;
                    }
                    // Others in the batch have woken the committer already.
                    drop(guard);
                    wake.notify_one();
                }
            }
        };
        // Without a runtime (a test's teardown) nothing can wait on it any more: the
        // connection closes with the runtime and SQLite rolls back what was not committed.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(finish);
        }
    }
}

tokio::task_local! {
    /// The highest batch a rolled-back joiner of this request was in (0: none).
    static SEEN_UNCOMMITTED: Cell<u64>;
}

/// The batch an answer must wait for before it is sent (0 on PostgreSQL, or when the request
/// read nothing uncommitted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fence(u64);

/// Runs a request's work, noting the batch whose uncommitted writes it may have read; wait for
/// it with [`crate::Durability::durable`] before answering.
pub async fn fenced<F: Future>(work: F) -> (F::Output, Fence) {
    SEEN_UNCOMMITTED
        .scope(Cell::new(0), async move {
            let out = work.await;
            (out, Fence(SEEN_UNCOMMITTED.with(Cell::get)))
        })
        .await
}

#[cfg(test)]
mod tests {
    //! The batching itself, on a scratch table: writers that queue share a commit, a failure
    //! is its own (or, at COMMIT, everyone's), a caller that goes away leaves nothing open.

    use super::*;
    use sqlx::Row;
    use sqlx::sqlite::SqliteJournalMode;
    use std::str::FromStr;
    use std::time::Duration;

    async fn writer() -> (Arc<GroupWriter>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/g.db", dir.path().display());
        let options = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true);
        let w = GroupWriter::connect(options).await.unwrap();
        w.exclusive()
            .await
            .unwrap()
            .conn()
            .execute(
                "CREATE TABLE parent (id INTEGER PRIMARY KEY); \
                 CREATE TABLE t (k INTEGER PRIMARY KEY, parent INTEGER \
                 REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
            )
            .await
            .unwrap();
        (w, dir)
    }

    async fn insert(tx: &mut GroupTx, k: i64, parent: Option<i64>) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO t (k, parent) VALUES ($1, $2)")
            .bind(k)
            .bind(parent)
            .execute(tx.conn())
            .await
            .map(drop)
    }

    async fn keys(w: &GroupWriter) -> Vec<i64> {
        sqlx::query("SELECT k FROM t ORDER BY k")
            .fetch_all(w.exclusive().await.unwrap().conn())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<i64, _>(0))
            .collect()
    }

    async fn batches(w: &GroupWriter) -> u64 {
        w.state.lock().await.batches
    }

    /// Starts `n` writers, each inserting its key, while `holder` keeps the connection: they
    /// all queue behind it.
    fn queue_writers(
        w: &Arc<GroupWriter>,
        keys: impl IntoIterator<Item = i64>,
    ) -> Vec<tokio::task::JoinHandle<Result<(), sqlx::Error>>> {
        keys.into_iter()
            .map(|k| {
                let w = w.clone();
                tokio::spawn(async move {
                    let mut tx = w
                        .begin()
                        .await
                        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                    insert(&mut tx, k, None).await?;
                    tx.commit().await
                })
            })
            .collect()
    }

    /// Waits until `n` transactions queue for the writer (the queue is fair: they are served
    /// in the order they arrived), plus a moment for the last to have polled its place.
    async fn wait_for_queue(w: &GroupWriter, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while w.queued.load(Ordering::SeqCst) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{n} writers never queued"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_that_queue_share_one_commit() {
        let (w, _dir) = writer().await;
        let before = batches(&w).await;
        let mut holder = w.begin().await.unwrap();
        insert(&mut holder, 0, None).await.unwrap();
        let queued = queue_writers(&w, 1..=40);
        wait_for_queue(&w, 40).await;
        holder.commit_in_background();
        for q in queued {
            q.await.unwrap().expect("every queued writer is committed");
        }
        assert_eq!(keys(&w).await, (0..=40).collect::<Vec<_>>());
        let used = batches(&w).await - before;
        assert_eq!(used, 1, "41 writers that queued together share one commit");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_writer_rolls_back_only_itself() {
        let (w, _dir) = writer().await;
        let mut holder = w.begin().await.unwrap();
        insert(&mut holder, 1, None).await.unwrap();
        // Between two good writers, one that fails halfway: its first row is undone with it.
        let good_before = queue_writers(&w, [2]);
        wait_for_queue(&w, 1).await;
        let bad = {
            let w = w.clone();
            tokio::spawn(async move {
                let mut tx = w.begin().await.unwrap();
                insert(&mut tx, 100, None).await.unwrap();
                insert(&mut tx, 100, None).await // the primary key refuses it
            })
        };
        wait_for_queue(&w, 2).await;
        let good_after = queue_writers(&w, [3]);
        wait_for_queue(&w, 3).await;
        holder.commit_in_background();
        assert!(bad.await.unwrap().is_err());
        for q in good_before.into_iter().chain(good_after) {
            q.await
                .unwrap()
                .expect("a batch-mate's failure is not ours");
        }
        assert_eq!(keys(&w).await, vec![1, 2, 3]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_fails_every_writer_in_it_and_the_next_batch_works() {
        let (w, _dir) = writer().await;
        let mut holder = w.begin().await.unwrap();
        insert(&mut holder, 1, None).await.unwrap();
        let good = queue_writers(&w, [2]);
        // A deferred foreign key: checked only at COMMIT, which then fails for the batch.
        let poison = {
            let w = w.clone();
            tokio::spawn(async move {
                let mut tx = w.begin().await.unwrap();
                insert(&mut tx, 3, Some(999)).await.unwrap();
                tx.commit().await
            })
        };
        // A reader that wrote nothing, dropped inside the batch: its answer waits on the batch.
        let reader = {
            let w = w.clone();
            tokio::spawn(async move {
                let ((), fence) = fenced(async {
                    let mut tx = w.begin().await.unwrap();
                    sqlx::query("SELECT COUNT(*) FROM t")
                        .fetch_one(tx.conn())
                        .await
                        .unwrap();
                })
                .await;
                assert_ne!(fence, Fence::default(), "it read inside a batch");
                w.durable(fence).await
            })
        };
        wait_for_queue(&w, 3).await;
        let holder_result = holder.commit_in_background();
        assert!(poison.await.unwrap().is_err());
        for q in good {
            assert!(
                q.await.unwrap().is_err(),
                "a failed COMMIT fails everyone in it"
            );
        }
        assert!(holder_result.await.unwrap().is_err());
        let fenced_answer = reader.await.unwrap();
        assert!(
            matches!(fenced_answer, Err(StoreError::CommitFailed(_))),
            "the reader's answer must not go out: {fenced_answer:?}"
        );
        assert!(
            keys(&w).await.is_empty(),
            "nothing of the failed batch is written"
        );
        // And the writer goes on.
        let mut tx = w.begin().await.unwrap();
        insert(&mut tx, 4, None).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(keys(&w).await, vec![4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_goes_away_leaves_nothing_open() {
        let (w, _dir) = writer().await;
        let mut holder = w.begin().await.unwrap();
        insert(&mut holder, 1, None).await.unwrap();
        // One caller abandons its transaction halfway (dropped: rolled back), one goes away
        // while waiting for the commit (its write stands, as a commit already sent would).
        let (wrote, written) = tokio::sync::oneshot::channel();
        let abandoned = {
            let w = w.clone();
            tokio::spawn(async move {
                let mut tx = w.begin().await.unwrap();
                insert(&mut tx, 2, None).await.unwrap();
                let _ = wrote.send(());
                std::future::pending::<()>().await;
            })
        };
        wait_for_queue(&w, 1).await;
        let impatient = queue_writers(&w, [3]);
        wait_for_queue(&w, 2).await;
        let held = holder.commit_in_background();
        // The abandoned one now holds the connection, its row written, the others behind it.
        written.await.unwrap();
        abandoned.abort();
        tokio::time::sleep(Duration::from_millis(1)).await;
        for q in impatient {
            q.abort();
        }
        held.await.unwrap().unwrap();
        // Whatever happened to the impatient one, the batch ended and the writer is free.
        let mut tx = tokio::time::timeout(Duration::from_secs(5), w.begin())
            .await
            .expect("no batch left open")
            .unwrap();
        insert(&mut tx, 4, None).await.unwrap();
        tx.commit().await.unwrap();
        let k = keys(&w).await;
        assert!(
            !k.contains(&2),
            "the abandoned transaction was rolled back: {k:?}"
        );
        assert!(k.contains(&1) && k.contains(&4), "{k:?}");
    }

    impl GroupTx {
        /// Commits from a task of its own (the test goes on while it waits for the batch).
        fn commit_in_background(self) -> tokio::task::JoinHandle<Result<(), sqlx::Error>> {
            tokio::spawn(self.commit())
        }
    }
}
