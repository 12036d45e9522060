//! `--metrics ADDR`: Prometheus metrics and health endpoints, served off the echo path.
#![allow(dead_code)] // wired in after the core restructuring merges

mod exposition;
mod http;
mod process;
