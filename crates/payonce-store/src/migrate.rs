//! A tiny migration runner shared by both stores: numbered SQL files embedded in the binary,
//! applied in order, each recorded in `schema_migrations`.

/// (version, SQL) for SQLite.
pub const SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_channel_data.sql")),
    (3, include_str!("../migrations/sqlite/0003_workers_refunds.sql")),
    (4, include_str!("../migrations/sqlite/0004_webhooks.sql")),
    (5, include_str!("../migrations/sqlite/0005_sinks.sql")),
    (6, include_str!("../migrations/sqlite/0006_credential_life.sql")),
    (7, include_str!("../migrations/sqlite/0007_trade_no_index.sql")),
];
/// (version, SQL) for PostgreSQL.
pub const POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_channel_data.sql")),
    (3, include_str!("../migrations/postgres/0003_workers_refunds.sql")),
    (4, include_str!("../migrations/postgres/0004_webhooks.sql")),
    (5, include_str!("../migrations/postgres/0005_sinks.sql")),
    (6, include_str!("../migrations/postgres/0006_credential_life.sql")),
    (7, include_str!("../migrations/postgres/0007_trade_no_index.sql")),
];

/// Splits a migration file into statements. Our migrations contain no semicolons inside
/// literals or bodies, so splitting on `;` at a line end is exact.
pub fn statements(sql: &str) -> impl Iterator<Item = String> + '_ {
    sql.split(";\n")
        .map(|s| {
            s.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|s| !s.trim().is_empty())
}
