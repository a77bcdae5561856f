//! Embeds the migrations: writes `$OUT_DIR/migrations.rs`, one list per backend of
//! `(version, description, include_str!(file))`, read the way sqlx's own `MigrationSource` reads
//! a directory (`<version>_<description>.sql`, `_` in the description read as a space). sqlx's
//! `migrate!` macro did this at compile time, but its proc-macro crate pulls both database
//! drivers and SQLite's C build into the compiler a second time; the `Migrator` and the
//! checksums stay sqlx's (`migrate.rs`). Reruns when a file under `migrations/` changes.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // A directory is watched whole: a file added, edited or removed under it reruns this.
    println!("cargo:rerun-if-changed=migrations");
    let mut out = String::new();
    for backend in ["sqlite", "postgres"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(backend);
        let mut files: Vec<(i64, String, String)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| entry.expect("a migrations directory entry").path())
            .filter(|path| path.extension().is_some_and(|x| x == "sql"))
            .map(|path| {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let (version, rest) = name
                    .split_once('_')
                    .unwrap_or_else(|| panic!("migration {name}: expected <version>_<name>.sql"));
                let version: i64 = version
                    .parse()
                    .unwrap_or_else(|_| panic!("migration {name}: the version is not a number"));
                let description = rest.trim_end_matches(".sql").replace('_', " ");
                (version, description, path.display().to_string())
            })
            .collect();
        files.sort();
        for pair in files.windows(2) {
            assert_ne!(
                pair[0].0, pair[1].0,
                "two {backend} migrations numbered {}",
                pair[0].0
            );
        }
        writeln!(
            out,
            "/// `migrations/{backend}`, in order.\npub(crate) const {}: &[(i64, &str, &str)] = &[",
            backend.to_uppercase()
        )
        .unwrap();
        for (version, description, path) in files {
            writeln!(
                out,
                "    ({version}, {description:?}, include_str!({path:?})),"
            )
            .unwrap();
        }
        out.push_str("];\n");
    }
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("migrations.rs");
    std::fs::write(dest, out).unwrap();
}
