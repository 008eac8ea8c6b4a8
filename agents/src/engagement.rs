//! The customer step of a workflow: offer the owner slots, receive the answer. The master
//! agent talks to a [`CustomerChannel`]; the embedded default is [`ConsoleChannel`], which
//! logs the offer and accepts the first slot, so the loop from alert to appointment closes
//! without a person. A voice/SMS engagement agent (intent understanding, multi-turn
//! dialogue, escalation) plugs in by implementing the same trait.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use pmi_core::{Component, EventTime, Severity};
use pmi_sinks::sql::registry::ContactChannel;

use crate::scheduling::Slot;

/// What the customer is offered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    /// The alert the offer answers.
    pub alert_id: i64,
    /// The vehicle.
    pub vehicle_id: String,
    /// Its owner.
    pub customer_id: String,
    /// How the owner prefers to be reached.
    pub channel: ContactChannel,
    /// How urgent.
    pub severity: Severity,
    /// The implicated component, if known.
    pub component: Option<Component>,
    /// What the diagnosis found, in a sentence.
    pub summary: String,
    /// Estimated cost and currency.
    pub estimated_cost: Option<(f64, String)>,
    /// The slots, best first.
    pub slots: Vec<Slot>,
    /// The appointment must start by then (the alert's SLA).
    pub respond_by: EventTime,
}

/// The customer's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Takes `slots[index]`.
    Accept {
        /// Index into [`Offer::slots`].
        index: usize,
    },
    /// None of these; the agent may offer others.
    Decline {
        /// What the customer said, if anything.
        reason: Option<String>,
    },
    /// No answer within the channel's patience.
    NoAnswer,
    /// Do not contact me again: consent withdrawn (the agent records it and hands the
    /// alert to a person).
    OptOut,
}

/// A channel failed to deliver the offer (the agent retries it later).
#[derive(Debug, thiserror::Error)]
#[error("channel `{channel}`: {message}")]
pub struct ChannelError {
    /// The channel.
    pub channel: String,
    /// What went wrong.
    pub message: String,
}

/// The future a channel returns.
pub type OfferFuture<'a> = Pin<Box<dyn Future<Output = Result<Answer, ChannelError>> + Send + 'a>>;

/// Reaches customers: offers slots and returns the answer.
pub trait CustomerChannel: Send + Sync {
    /// The channel's name (for the audit log).
    fn name(&self) -> &str;
    /// Offers `offer` to its customer and waits for the answer.
    fn offer<'a>(&'a self, offer: &'a Offer) -> OfferFuture<'a>;
}

/// The embedded default: logs the offer (one line per offer) and accepts the first slot.
#[derive(Clone, Debug, Default)]
pub struct ConsoleChannel {
    /// Also print offers to stdout (besides the log).
    pub print: bool,
}

impl CustomerChannel for ConsoleChannel {
    fn name(&self) -> &str {
        "console"
    }

    fn offer<'a>(&'a self, offer: &'a Offer) -> OfferFuture<'a> {
        Box::pin(async move {
            let first = offer.slots.first().map_or("no slot".to_owned(), |s| {
                format!(
                    "{} bay {} at {}",
                    s.center_id,
                    s.bay,
                    s.starts_at.to_rfc3339()
                )
            });
            let line = format!(
                "OFFER alert {} to {} via {} for {}: {} — {} slot(s), accepting {}",
                offer.alert_id,
                offer.customer_id,
                offer.channel.name(),
                offer.vehicle_id,
                offer.summary,
                offer.slots.len(),
                first
            );
            tracing::info!(target: "pmi::engagement", "{line}");
            if self.print {
                println!("{line}");
            }
            Ok(if offer.slots.is_empty() {
                Answer::Decline {
                    reason: Some("no slot offered".into()),
                }
            } else {
                Answer::Accept { index: 0 }
            })
        })
    }
}
