//! Migrations: numbered SQL files per backend (`migrations/sqlite`, `migrations/postgres`),
//! embedded in the binary by `build.rs` and applied in order by sqlx's `Migrator`, each recorded with its
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
//! 4. Nothing else to register: `build.rs` lists the directory and reruns when it changes, so
//!    the new files are embedded; `schema_tag()` changes with them, so the tests' template databases
//!    are migrated afresh.
//!
//! Why two directories when 14 of the 17 pairs are byte-identical: each `Migrator` embeds one
//! directory, and the 3 that differ (0001 `is_duplicate` INTEGER/BOOLEAN, 0006 INTEGER/BIGINT,
//! 0009 BLOB/BYTEA, and their header comments) are already recorded, with their checksums, in
//! every database made so far: one shared directory would change one backend's files and
//! refuse those databases. Future migrations may need to differ too.

use crate::StoreError;
use sqlx::SqlSafeStr;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use std::sync::LazyLock;

/// The files, as `build.rs` found them: `(version, description, sql)`.
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

pub static SQLITE: LazyLock<Migrator> = LazyLock::new(|| migrator(embedded::SQLITE));
pub static POSTGRES: LazyLock<Migrator> = LazyLock::new(|| migrator(embedded::POSTGRES));

/// sqlx's migrator over embedded files, built as `sqlx::migrate!` builds it: a plain
/// (non-reversible) migration per file, its checksum sqlx's SHA-384 of the text, and a file
/// starting `-- no-transaction` run outside a transaction.
fn migrator(files: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    sql.starts_with("-- no-transaction"),
                )
            })
            .collect(),
    )
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The embedded migrations are what sqlx itself reads from the directories (its runtime
    /// `MigrationSource`, the reader `sqlx::migrate!` shares): same versions, descriptions, SQL,
    /// checksums and transaction mode — so every database migrated by a binary built with the
    /// macro is recognised, not refused as edited.
    #[tokio::test]
    async fn embedded_migrations_are_the_ones_sqlx_reads_from_the_directories() {
        for (backend, embedded) in [("sqlite", &*SQLITE), ("postgres", &*POSTGRES)] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(backend);
            let read = Migrator::new(dir.as_path())
                .await
                .expect("sqlx reads the directory");
            let (ours, theirs): (Vec<_>, Vec<_>) =
                (embedded.iter().collect(), read.iter().collect());
            assert_eq!(ours.len(), theirs.len(), "{backend}: how many");
            assert!(ours.len() >= 17, "{backend}: every migration is embedded");
            for (a, b) in ours.iter().zip(&theirs) {
                assert_eq!(a.version, b.version, "{backend}");
                assert_eq!(a.description, b.description, "{backend} {}", a.version);
                assert_eq!(
                    a.migration_type, b.migration_type,
                    "{backend} {}",
                    a.version
                );
                assert_eq!(a.sql.as_str(), b.sql.as_str(), "{backend} {}", a.version);
                assert_eq!(a.checksum, b.checksum, "{backend} {}", a.version);
                assert_eq!(a.no_tx, b.no_tx, "{backend} {}", a.version);
            }
        }
    }
}
