//! The backend dispatch under the store: a write transaction (`Tx`), a read handle (`Reader`)
//! and a statement (`Query`) that run on SQLite or PostgreSQL alike, so every aggregate's SQL is
//! written once, in plain functions. SQLite and PostgreSQL accept the same statements here (`$N`
//! parameters, `ON CONFLICT`, `RETURNING`, partial indexes); what differs (row locks, the
//! migrations) is a method of `Backend`, the dialect; how a write transaction begins and which
//! pool serves reads are each store's own (`sqlite.rs`, `postgres.rs`).
//!
//! A statement binds its values as `Arg`s (the few types the store binds), and is turned into the
//! backend's own sqlx query only when it runs: one `match` per call, no extra round trip.

use crate::{Backend, Result, StoreError, migrate};
use sqlx::postgres::{PgArguments, PgConnection, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteRow};
use sqlx::{Arguments, AssertSqlSafe, PgPool, Postgres, SqlSafeStr, SqlStr, Sqlite, SqlitePool};
use std::borrow::Cow;

impl Backend {
    /// Appended to the SELECT that reads an order inside a write transaction: PostgreSQL locks
    /// the row so every transition of one order is serialized; SQLite has one writer
    /// connection, which serializes all writes already.
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// Whether one write transaction runs at a time (SQLite's one writer): what a transaction
    /// read at its start is still true later in it, with no lock taken. On PostgreSQL a row
    /// read before its order was locked must be read again under the lock.
    pub(crate) fn one_writer(self) -> bool {
        matches!(self, Backend::Sqlite)
    }

    /// Ends the sub-select of a claim: concurrent workers claim different rows (PostgreSQL);
    /// SQLite has one writer.
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The backend's own migrations (`migrations/sqlite`, `migrations/postgres`).
    pub(crate) fn migrator(self) -> &'static sqlx::migrate::Migrator {
        match self {
            Backend::Sqlite => &migrate::SQLITE,
            Backend::Postgres => &migrate::POSTGRES,
        }
    }
}

/// A write transaction. Dropped without `commit`, it rolls back.
pub(crate) enum Tx {
    /// In the SQLite writer's current batch (`group_commit`).
    Sqlite(crate::group_commit::GroupTx),
    Pg(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    pub(crate) fn dialect(&self) -> Backend {
        match self {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Pg(_) => Backend::Postgres,
        }
    }

    /// `Backend::for_update` of this transaction's backend.
    pub(crate) fn for_update(&self) -> &'static str {
        self.dialect().for_update()
    }

    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Pg(tx) => tx.commit().await,
        }
    }
}

/// Where reads go: the SQLite readers' pool, or the pool of the PostgreSQL server in use (a
/// cheap clone: pools are shared handles).
pub(crate) enum Reader {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

/// What a statement runs on: a transaction's connection or a reader's pool.
pub(crate) enum On<'c> {
    SqliteTx(&'c mut SqliteConnection),
    PgTx(&'c mut PgConnection),
    SqlitePool(&'c SqlitePool),
    PgPool(&'c PgPool),
}

impl<'c> From<&'c mut Tx> for On<'c> {
    fn from(tx: &'c mut Tx) -> Self {
        match tx {
            Tx::Sqlite(tx) => On::SqliteTx(tx.conn()),
            Tx::Pg(tx) => On::PgTx(tx),
        }
    }
}

impl<'c> From<&'c Reader> for On<'c> {
    fn from(r: &'c Reader) -> Self {
        match r {
            Reader::Sqlite(p) => On::SqlitePool(p),
            Reader::Pg(p) => On::PgPool(p),
        }
    }
}

/// Decodes a row struct by column name on both backends, as `#[derive(sqlx::FromRow)]` would:
/// each field read with sqlx's `Row::try_get` under its own name, or under the column name
/// given after `=` (`event_type = "type"`). Written out because sqlx's derive lives in its
/// proc-macro crate, which compiles both database drivers and SQLite's C source a second time,
/// for the compiler. A field left out, or one the struct lacks, does not compile.
macro_rules! from_row {
    ($row:ident { $($field:ident $(= $column:literal)?),* $(,)? }) => {
        $crate::db::from_row!(@on $row, sqlx::sqlite::SqliteRow, $($field $(= $column)?),*);
        $crate::db::from_row!(@on $row, sqlx::postgres::PgRow, $($field $(= $column)?),*);
    };
    (@on $row:ident, $backend:ty, $($field:ident $(= $column:literal)?),*) => {
        impl<'r> sqlx::FromRow<'r, $backend> for $row {
            fn from_row(row: &'r $backend) -> Result<Self, sqlx::Error> {
                use sqlx::Row as _;
                Ok(Self {
                    $($field: row.try_get($crate::db::from_row!(@column $field $($column)?))?,)*
                })
            }
        }
    };
    (@column $field:ident $column:literal) => { $column };
    (@column $field:ident) => { stringify!($field) };
}
pub(crate) use from_row;

/// A row type both backends decode (structs declared with `from_row!`, tuples).
pub(crate) trait FromRow:
    for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> FromRow for T where
    T: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin
{
}

/// A model type read through its row type: sqlx decodes the row, `TryFrom` checks its values
/// (anything our own code could not have written is `StoreError::Corrupt`).
pub(crate) trait Model: TryFrom<Self::Row, Error = StoreError> {
    type Row: FromRow;
}

/// One bound value: the types the store binds. Text borrows where it can (sqlx copies it
/// into the backend's arguments when the statement runs).
pub(crate) enum Arg<'a> {
    I64(Option<i64>),
    I32(Option<i32>),
    Bool(bool),
    Text(Option<Cow<'a, str>>),
    Bytes(&'a [u8]),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::I64(Some(v))
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::I64(v)
    }
}
impl From<i32> for Arg<'_> {
    fn from(v: i32) -> Self {
        Arg::I32(Some(v))
    }
}
impl From<Option<i32>> for Arg<'_> {
    fn from(v: Option<i32>) -> Self {
        Arg::I32(v)
    }
}
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(Cow::Borrowed(v)))
    }
}
impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(Cow::Borrowed(v)))
    }
}
impl From<String> for Arg<'_> {
    fn from(v: String) -> Self {
        Arg::Text(Some(Cow::Owned(v)))
    }
}
impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v.map(Cow::Borrowed))
    }
}
impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::Text(v.as_deref().map(Cow::Borrowed))
    }
}
impl From<Option<String>> for Arg<'_> {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v.map(Cow::Owned))
    }
}
impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Bytes(v)
    }
}

/// A statement and its bound values.
pub(crate) struct Query<'a> {
    sql: SqlStr,
    args: Vec<Arg<'a>>,
}

/// A statement with literal SQL.
pub(crate) fn q<'a>(sql: impl SqlSafeStr) -> Query<'a> {
    Query {
        sql: sql.into_sql_str(),
        args: Vec::new(),
    }
}

/// A statement whose SQL was formatted: only this crate's constants (column lists, the
/// dialect's clauses, numbered placeholders, a table name of its own) are formatted in, never
/// a value — every value is bound.
pub(crate) fn q_fmt<'a>(sql: String) -> Query<'a> {
    q(AssertSqlSafe(sql))
}

/// The values, as SQLite's arguments.
fn sqlite_args(args: &[Arg<'_>]) -> Result<SqliteArguments, sqlx::error::BoxDynError> {
    let mut out = SqliteArguments::default();
    for a in args {
        match a {
            Arg::I64(v) => out.add(*v)?,
            Arg::I32(v) => out.add(*v)?,
            Arg::Bool(v) => out.add(*v)?,
            Arg::Text(v) => out.add(v.as_deref())?,
            Arg::Bytes(v) => out.add(*v)?,
        }
    }
    Ok(out)
}

/// The values, as PostgreSQL's arguments (each typed as before: INT8, INT4, BOOL, TEXT, BYTEA).
fn pg_args(args: &[Arg<'_>]) -> Result<PgArguments, sqlx::error::BoxDynError> {
    let mut out = PgArguments::default();
    for a in args {
        match a {
            Arg::I64(v) => out.add(*v)?,
            Arg::I32(v) => out.add(*v)?,
            Arg::Bool(v) => out.add(*v)?,
            Arg::Text(v) => out.add(v.as_deref())?,
            Arg::Bytes(v) => out.add(*v)?,
        }
    }
    Ok(out)
}

impl<'a> Query<'a> {
    pub(crate) fn bind(mut self, value: impl Into<Arg<'a>>) -> Self {
        self.args.push(value.into());
        self
    }

    fn sqlite(self) -> Result<sqlx::query::Query<'static, Sqlite, SqliteArguments>, sqlx::Error> {
        let args = sqlite_args(&self.args).map_err(sqlx::Error::Encode)?;
        Ok(sqlx::query_with(self.sql, args))
    }

    fn pg(self) -> Result<sqlx::query::Query<'static, Postgres, PgArguments>, sqlx::Error> {
        let args = pg_args(&self.args).map_err(sqlx::Error::Encode)?;
        Ok(sqlx::query_with(self.sql, args))
    }

    fn sqlite_as<R: FromRow>(
        self,
    ) -> Result<sqlx::query::QueryAs<'static, Sqlite, R, SqliteArguments>, sqlx::Error> {
        let args = sqlite_args(&self.args).map_err(sqlx::Error::Encode)?;
        Ok(sqlx::query_as_with(self.sql, args))
    }

    fn pg_as<R: FromRow>(
        self,
    ) -> Result<sqlx::query::QueryAs<'static, Postgres, R, PgArguments>, sqlx::Error> {
        let args = pg_args(&self.args).map_err(sqlx::Error::Encode)?;
        Ok(sqlx::query_as_with(self.sql, args))
    }

    /// Runs the statement; how many rows it changed.
    pub(crate) async fn execute<'c>(self, on: impl Into<On<'c>>) -> Result<u64, sqlx::Error> {
        Ok(match on.into() {
            On::SqliteTx(c) => self.sqlite()?.execute(c).await?.rows_affected(),
            On::SqlitePool(p) => self.sqlite()?.execute(p).await?.rows_affected(),
            On::PgTx(c) => self.pg()?.execute(c).await?.rows_affected(),
            On::PgPool(p) => self.pg()?.execute(p).await?.rows_affected(),
        })
    }

    pub(crate) async fn fetch_optional<'c, R: FromRow>(
        self,
        on: impl Into<On<'c>>,
    ) -> Result<Option<R>, sqlx::Error> {
        match on.into() {
            On::SqliteTx(c) => self.sqlite_as()?.fetch_optional(c).await,
            On::SqlitePool(p) => self.sqlite_as()?.fetch_optional(p).await,
            On::PgTx(c) => self.pg_as()?.fetch_optional(c).await,
            On::PgPool(p) => self.pg_as()?.fetch_optional(p).await,
        }
    }

    pub(crate) async fn fetch_one<'c, R: FromRow>(
        self,
        on: impl Into<On<'c>>,
    ) -> Result<R, sqlx::Error> {
        match on.into() {
            On::SqliteTx(c) => self.sqlite_as()?.fetch_one(c).await,
            On::SqlitePool(p) => self.sqlite_as()?.fetch_one(p).await,
            On::PgTx(c) => self.pg_as()?.fetch_one(c).await,
            On::PgPool(p) => self.pg_as()?.fetch_one(p).await,
        }
    }

    pub(crate) async fn fetch_all<'c, R: FromRow>(
        self,
        on: impl Into<On<'c>>,
    ) -> Result<Vec<R>, sqlx::Error> {
        match on.into() {
            On::SqliteTx(c) => self.sqlite_as()?.fetch_all(c).await,
            On::SqlitePool(p) => self.sqlite_as()?.fetch_all(p).await,
            On::PgTx(c) => self.pg_as()?.fetch_all(c).await,
            On::PgPool(p) => self.pg_as()?.fetch_all(p).await,
        }
    }

    /// The first column of the one row.
    pub(crate) async fn scalar<'c, T>(self, on: impl Into<On<'c>>) -> Result<T, sqlx::Error>
    where
        (T,): FromRow,
    {
        Ok(self.fetch_one::<(T,)>(on).await?.0)
    }

    /// The first column of the row, if there is one.
    pub(crate) async fn scalar_optional<'c, T>(
        self,
        on: impl Into<On<'c>>,
    ) -> Result<Option<T>, sqlx::Error>
    where
        (T,): FromRow,
    {
        Ok(self.fetch_optional::<(T,)>(on).await?.map(|(t,)| t))
    }

    /// The one row, as a model.
    pub(crate) async fn load<'c, M: Model>(self, on: impl Into<On<'c>>) -> Result<M> {
        self.fetch_one::<M::Row>(on).await?.try_into()
    }

    /// The row, if there is one, as a model.
    pub(crate) async fn load_optional<'c, M: Model>(
        self,
        on: impl Into<On<'c>>,
    ) -> Result<Option<M>> {
        self.fetch_optional::<M::Row>(on)
            .await?
            .map(M::try_from)
            .transpose()
    }

    /// Every row, as models.
    pub(crate) async fn load_all<'c, M: Model>(self, on: impl Into<On<'c>>) -> Result<Vec<M>> {
        self.fetch_all::<M::Row>(on)
            .await?
            .into_iter()
            .map(M::try_from)
            .collect()
    }
}
