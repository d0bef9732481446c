//! The six measurements, one module each. Each adds a section to the
//! [`Report`](crate::report::Report) with our figure beside its baseline.

mod contention;
mod fanout;
mod http;
mod propagation;
mod resources;
mod warm_read;
