//! The control loop: watch triggers feed the work queue; while this replica leads, due
//! namespaces are reconciled one at a time. Becoming leader, a relist and the periodic resync
//! queue every active namespace.

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use crate::{
    queue::{Trigger, WorkQueue},
    reconcile::{Context, reconcile},
};

pub struct Timing {
    pub debounce: Duration,
    pub resync_interval: Duration,
    /// How often lapsed data-plane heartbeats are looked for.
    pub served_refresh: Duration,
    /// How often spend in VirtualKey status is refreshed, when it is reported at all.
    pub spend_refresh: Option<Duration>,
}

pub async fn run(
    ctx: Arc<Context>,
    timing: Timing,
    mut triggers: mpsc::UnboundedReceiver<Trigger>,
    mut leading: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut queue = WorkQueue::new(timing.debounce);
    let mut resync = tokio::time::interval(timing.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Spend changes with traffic, not with objects: refreshed on its own clock.
    let mut spend = tokio::time::interval(timing.spend_refresh.unwrap_or(timing.resync_interval));
    spend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut served = tokio::time::interval(timing.served_refresh);
    served.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let is_leader = *leading.borrow();
        let next = queue.next_due().filter(|_| is_leader);
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            changed = leading.changed() => {
                if changed.is_err() {
                    return;
                }
                if *leading.borrow_and_update() {
                    add_all(&ctx, &mut queue);
                }
            }
            trigger = triggers.recv() => match trigger {
                Some(Trigger::Namespace(ns)) => queue.add(&ns, Instant::now()),
                Some(Trigger::All) => add_all(&ctx, &mut queue),
                Some(Trigger::Heartbeat(ns)) => add_if_served_changed(&ctx, &mut queue, &ns),
                None => return,
            },
            _ = resync.tick() => add_all(&ctx, &mut queue),
            // A data plane that stops beating sends nothing: lapsed heartbeats are found here.
            _ = served.tick() => {
                for namespace in ctx.scopes.active_namespaces() {
                    add_if_served_changed(&ctx, &mut queue, &namespace);
                }
            }
            _ = spend.tick(), if timing.spend_refresh.is_some() => add_all(&ctx, &mut queue),
            () = sleep_until(next), if next.is_some() => {
                for namespace in queue.take_due(Instant::now()) {
                    if !*leading.borrow() {
                        queue.add(&namespace, Instant::now());
                        continue;
                    }
                    reconcile_one(&ctx, &mut queue, &namespace).await;
                }
            }
        }
    }
}

async fn reconcile_one(ctx: &Context, queue: &mut WorkQueue, namespace: &str) {
    let started = Instant::now();
    let result = reconcile(ctx, namespace).await;
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(outcome) => {
            queue.succeeded(namespace);
            ctx.metrics.reconciled(Ok(()), seconds);
            tracing::debug!(namespace, ?outcome, "reconciled");
        }
        Err(error) => {
            let retry_in = queue.failed(namespace, Instant::now());
            ctx.metrics.reconciled(Err(error.reason()), seconds);
            tracing::warn!(namespace, %error, reason = error.reason(), retry_in = ?retry_in, "reconcile failed");
        }
    }
}

/// Queues `namespace` when what its data planes serve is no longer what its status says.
fn add_if_served_changed(ctx: &Context, queue: &mut WorkQueue, namespace: &str) {
    if ctx.served_changed(namespace) {
        queue.add(namespace, Instant::now());
    }
}

fn add_all(ctx: &Context, queue: &mut WorkQueue) {
    let now = Instant::now();
    for namespace in ctx.scopes.active_namespaces() {
        queue.add(&namespace, now);
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}
