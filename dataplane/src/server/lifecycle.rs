//! A shutdown in phases, one signal each: draining (`/readyz` says 503 so load balancers stop
//! sending, new connections are still served), closed (the listeners stop accepting; requests in
//! flight go on), and ended (the grace is over: what is still open ends with an explicit error).

use tokio::sync::watch;

/// The phases, as watch channels anyone can wait on.
#[derive(Clone)]
pub struct Lifecycle {
    draining: watch::Sender<bool>,
    closed: watch::Sender<bool>,
    ended: watch::Sender<bool>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            draining: watch::channel(false).0,
            closed: watch::channel(false).0,
            ended: watch::channel(false).0,
        }
    }
}

impl Lifecycle {
    pub fn drain(&self) {
        self.draining.send_replace(true);
    }

    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    pub fn end(&self) {
        self.ended.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Flips when the listeners stop accepting.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Flips when the grace is over.
    pub fn ended(&self) -> watch::Receiver<bool> {
        self.ended.subscribe()
    }
}
