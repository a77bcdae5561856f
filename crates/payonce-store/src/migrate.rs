//! Migrations: numbered SQL files per backend (`migrations/sqlite`, `migrations/postgres`),
//! embedded in the binary by `sqlx::migrate!` and applied in order, each recorded with its
//! checksum in `_sqlx_migrations`. A database that records a migration this binary does not
//! have was migrated by a newer payonce: it is refused, never written to.
//!
//! Adding a migration:
//! 1. Write it twice, under the same next number and name, in `migrations/sqlite/` and
//!    `migrations/postgres/` (e.g. `0018_what_it_does.sql`), starting with a comment saying why.
//!    Both backends must end with the same tables, columns and indexes: the one `SqlStore` runs
//!    the same statements on either.
//! 2. Only what the dialects force may differ: column types (SQLite `INTEGER`/`BLOB` where
//!    PostgreSQL has `BIGINT`, `BOOLEAN`, `BYTEA`), and statements SQLite lacks (its
//!    `ALTER TABLE` cannot alter or drop a constraint: a table is rebuilt instead). Otherwise
//!    copy the file byte for byte.
//! 3. Never edit a migration once it is on main: each database records every applied file's
//!    checksum and refuses a binary whose file differs (`VersionMismatch`). Fix forward with a
//!    new number.
//! 4. Nothing else to register: `build.rs` reruns the build when `migrations/` changes, so the
//!    new files are embedded; `schema_tag()` changes with them, so the tests' template databases
//!    are migrated afresh.
//!
//! Why two directories when 14 of the 17 pairs are byte-identical: each `Migrator` embeds one
//! directory, and the 3 that differ (0001 `is_duplicate` INTEGER/BOOLEAN, 0006 INTEGER/BIGINT,
//! 0009 BLOB/BYTEA, and their header comments) are already recorded, with their checksums, in
//! every database made so far: one shared directory would change one backend's files and
//! refuse those databases. Future migrations may need to differ too.

use crate::StoreError;
use sqlx::migrate::{MigrateError, Migrator};

pub static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
pub static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

/// The newest migration this binary carries.
fn newest(m: &Migrator) -> i64 {
    m.iter().map(|m| m.version).max().unwrap_or(0)
}

/// A migration failure, said so that an operator knows what to do.
pub fn explain(m: &Migrator, e: MigrateError) -> StoreError {
    StoreError::Migration(match e {
        MigrateError::VersionMissing(v) => format!(
            "the database was migrated by a newer payonce (it has migration {v}; this binary knows up to {}): \
             run the newer payonce, or restore a backup taken before the upgrade",
            newest(m)
        ),
        MigrateError::VersionMismatch(v) => format!(
            "migration {v} in the database differs from this binary's (edited after it was applied)"
        ),
        other => other.to_string(),
    })
}
