//! The bill of a served call: its admitted ticket, costed at the serving deployment's price with
//! the usage the provider reported, and settled with the store.

use crate::{
    catalog::{Price, usd},
    decision::DecisionRecord,
    limits::Ticket,
    provider::Usage,
};

/// An admitted call's ticket and what is needed to cost it once it is served.
pub struct Bill {
    pub ticket: Ticket,
    /// The serving deployment's price.
    pub price: Option<Price>,
    /// The prompt's estimated tokens, billed when a stream ends without the provider's usage.
    pub prompt_tokens: u64,
}

/// The serving deployment's price applied to usage. The bill and the cost a streaming client
/// reads in its usage chunk both come from here, so they agree.
#[derive(Clone, Copy, Debug)]
pub struct Pricer(Option<Price>);

impl Pricer {
    /// Nano-dollars; a call to an unpriced deployment costs nothing.
    pub fn nanos(self, usage: &Usage) -> i64 {
        self.0.map_or(0, |p| p.cost_nanos(usage))
    }

    /// `deployment` or `catalog`; `None` for an unpriced deployment.
    pub fn source(self) -> Option<&'static str> {
        self.0.map(|p| p.source.as_str())
    }
}

impl Bill {
    pub fn pricer(&self) -> Pricer {
        Pricer(self.price)
    }

    /// Costs the call (the price times the reported usage), records the cost, and returns the
    /// ticket to settle at that cost. Without usage the cost is unknown: the reservation is
    /// released and there is nothing to settle.
    pub fn cost(self, usage: Option<Usage>, record: &mut DecisionRecord) -> Option<Settle> {
        let usage = usage?;
        let pricer = self.pricer();
        let cost = pricer.nanos(&usage);
        record.cost_usd = Some(usd(cost));
        record.price_source = pricer.source();
        Some(Settle {
            ticket: self.ticket,
            cost,
            tokens: usage.total_tokens,
        })
    }
}

/// A costed call, ready to settle.
pub struct Settle {
    ticket: Ticket,
    /// Nano-dollars.
    pub cost: i64,
    tokens: u64,
}

impl Settle {
    /// Before a complete answer goes out, so the caller's next request already sees its spend.
    pub async fn now(self) {
        self.ticket.settle(self.cost, self.tokens).await;
    }

    /// After a stream's last byte went out.
    pub fn in_background(self) {
        self.ticket.settle_in_background(self.cost, self.tokens);
    }
}
