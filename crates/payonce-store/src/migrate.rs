//! Migrations: numbered SQL files per backend (`migrations/sqlite`, `migrations/postgres`),
//! embedded in the binary by `sqlx::migrate!` and applied in order, each recorded with its
//! checksum in `_sqlx_migrations`. A database that records a migration this binary does not
//! have was migrated by a newer payonce: it is refused, never written to.

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
