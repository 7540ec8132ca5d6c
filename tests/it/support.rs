//! The black-box tests' process harness lives in ganymede-testkit, shared with benches.

pub use ganymede_testkit::eventually;
pub use ganymede_testkit::process::{PROCESS_ADMIN_TOKEN as ADMIN_TOKEN, ProcessCluster, append_config, ganymede_bin};
