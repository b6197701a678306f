//! Domain allowlists that hold: each session's DNS goes to a resolver of
//! its own (the kernel redirects TCP and UDP port 53 there, whatever
//! address the query was sent to), which answers only the names its policy
//! names and opens exactly the answered addresses, for the answer's TTL.
pub mod names;
pub mod peer;
pub mod resolver;
pub mod table;

pub use resolver::{Bound, Inputs, SessionResolver, Settings};
