//! Intentionally empty: this crate exists for its `Cargo.toml`, which lists
//! every dependency with the union of the features the workspace enables (see
//! `.config/hakari.toml`). Each package depends on it, so a dependency is
//! compiled once whichever package cargo builds first.
