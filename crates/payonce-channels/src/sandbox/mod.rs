//! `sandbox`: payonce's own small test channel. A JSON protocol over HTTP in which every
//! request, response and notification carries an HMAC-SHA256 signature over a timestamp, the
//! method, the path and the body — the shape of the real channels' protocols without their
//! paperwork, so the whole engine can be exercised before any merchant account exists.

pub mod bill;
mod client;
pub mod protocol;

pub use client::SandboxClient;
