//! The client commands: `produce` (events onto the input topic),
//! `subscriptions` (the admin API) and `sample-webhook --send`, `receive` (a local verifying receiver), and the dev
//! state file through which they find a running `rewardhooks dev`.

pub mod client;
pub mod produce;
pub mod receive;
pub mod state;
