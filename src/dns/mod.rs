//! Names that move: backends given by host name, resolved by the control plane at start and again and again after
//! (Docker, Kubernetes, Consul move a service by changing what its name resolves to).
//!
//! The config keeps a backend's host as written (`config::backends`); here its name becomes addresses:
//! - `resolver.rs` asks the system's resolver (getaddrinfo: `/etc/hosts`, search domains and all, but no TTL), or
//!   the DNS server of the config's `resolver` key (which also tells each answer's TTL);
//! - `names.rs` keeps the last answer of every name and when to ask again: every `resolve_interval`, sooner when the
//!   answer's TTL is shorter; a failed lookup (or an answer without addresses) keeps the last addresses and is
//!   warned about at most once a minute per name;
//! - `expand.rs` turns the config as written into the config the routing follows: a backend by name becomes one
//!   member at its first address (`resolve = "first"`, kept while the name still resolves to it, so a resolver that
//!   rotates its answers does not move the backend), one member per address (`resolve = "all"`), or, before its name
//!   ever resolved, one member at `config::UNRESOLVED`, which is never eligible and never connected to; and says
//!   which backends moved, for the log.
//!
//! Applying an expansion is the control plane's (`control`): it is a reload without a file, so state is kept by
//! identity (id and address). The task that asks again is `reresolve`.

mod expand;
mod names;
mod resolver;

pub use expand::{expand, moves, names_of, Moved};
pub use names::Names;
pub use resolver::{Answer, Resolver};
