//! Black-box tests: the real `ganymede` binary in real processes on loopback, killed
//! with SIGKILL and restarted from their data directories.

mod audit;
mod backup;
mod bad_start;
mod browser;
mod cli;
mod dev;
mod edge;
mod failover;
mod flood;
mod jupyterhub;
mod jupyterlab;
mod local_cluster;
mod logs;
mod membership;
mod metrics;
mod nemesis;
mod ops_manifests;
mod security;
mod spawning;
mod support;
mod tls;
mod wire;
