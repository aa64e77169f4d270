//! Letting the application through the host firewall, scoped and
//! reversible.
//!
//! Host firewalls stop networked programs without a word in their logs:
//! a distribution's default-drop input policy, Windows Defender Firewall,
//! macOS's application firewall. The application asks for exactly the
//! openings it needs ([`Request`]: inbound TCP or UDP to some local ports,
//! optionally only from some peers — never "allow all"); the planner turns
//! it, for whatever manages the firewall ([`Manager`]), into operations
//! each paired with its undo ([`Plan`]). Every rule is tagged
//! `netmend:APP:INSTANCE`, so a later start can sweep what a crashed
//! instance left.
//!
//! The planner is sans-IO (every platform's plan is tested on any
//! platform, with golden outputs). On Linux, [`detect`] finds the manager,
//! [`open`] carries a plan out under a [`Guard`] that takes it away again,
//! and [`sweep`] removes what a killed instance left.
//!
//! ```
//! use netmend::firewall::{plan, Manager, NftChain, Protocol, Request};
//!
//! let request = Request::new("chat", "4242")?.allow(Protocol::Tcp, &[7000]);
//! let chain = NftChain { family: "inet".into(), table: "filter".into(), chain: "input".into() };
//! let p = plan(&request, &Manager::Nftables { dropping: vec![chain] })?;
//! assert_eq!(
//!     p.steps[0].apply.to_string(),
//!     "nft --echo --handle insert rule inet filter input meta l4proto tcp th dport 7000 accept comment '\"netmend:chat:4242\"'"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(target_os = "linux")]
mod linux;
mod plan;
mod request;

#[cfg(target_os = "linux")]
pub use linux::{
    apply, close_on_signal, detect, dropping_chains, open, sweep, FirewallError, Guard,
};
pub use plan::{plan, Command, IptablesBackend, Manager, NftChain, Plan, Privilege, Step, Undo};
pub use request::{
    Opening, Peer, Protocol, Request, RequestError, MAX_OPENINGS, MAX_PEERS, MAX_PORTS, TAG_PREFIX,
};
