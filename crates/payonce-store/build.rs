//! Rebuilds the store when a migration is added or edited: `sqlx::migrate!` embeds the
//! migration files at compile time, and without this a new file left the old set in the binary.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
