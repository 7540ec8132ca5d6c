//! Who a proposal comes from. The hub knows (the request's caller and address); the
//! proposal is made deep inside handlers that should not have to pass it along. So a
//! request runs inside [`scope`], its authentication fills the actor in, and every
//! proposal made on that task carries the origin into the log, where the audit record
//! reads it. Proposals made outside any scope (the hub's own background work) come
//! from the replica.

use std::future::Future;
use std::sync::{Arc, Mutex};

use ganymede_model::audit::Origin;

tokio::task_local! {
    static ORIGIN: Arc<Mutex<Origin>>;
}

fn lock(origin: &Mutex<Origin>) -> std::sync::MutexGuard<'_, Origin> {
    origin.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `work` with `origin` as the origin of its proposals.
pub async fn scope<F: Future>(origin: Origin, work: F) -> F::Output {
    ORIGIN.scope(Arc::new(Mutex::new(origin)), work).await
}

/// Names the actor of the current scope (once its caller is known); no-op outside one.
pub fn set_actor(actor: String, token_id: Option<u64>) {
    let _ = ORIGIN.try_with(|origin| {
        let mut origin = lock(origin);
        origin.actor = actor;
        origin.token_id = token_id;
    });
}

/// The current scope's origin, if the task runs in one.
pub fn current() -> Option<Origin> {
    ORIGIN.try_with(|origin| lock(origin).clone()).ok()
}
