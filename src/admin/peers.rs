//! How many admin connections each client address holds, so that one client cannot take every slot.
//!
//! The admin plane serves at most a few dozen connections at once (it is for a few people and scrapers). Without a
//! bound per client, one client holding them all (idle keep-alive connections, or heads sent a byte at a time) would
//! shut everyone else out, token or not: an admin plane behind a token must not be closable by someone without it.
//! A client address gets at most [`PER_PEER`] connections; the next one from it is closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Admin connections one client address may hold at once (a browser opens up to six per host).
pub const PER_PEER: usize = 16;

#[derive(Debug, Default)]
pub struct Peers {
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its client address until dropped.
#[derive(Debug)]
pub struct PeerSlot {
    peers: Arc<Peers>,
    ip: IpAddr,
}

impl Peers {
    /// Counts a connection from `ip`, unless it already holds [`PER_PEER`].
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(ip).or_insert(0);
        if *count >= PER_PEER {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut held = self.peers.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_its_share_and_gets_it_back() {
        let peers = Arc::new(Peers::default());
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let held: Vec<PeerSlot> = (0..PER_PEER).map(|_| peers.enter(a).unwrap()).collect();
        assert!(peers.enter(a).is_none(), "one more from the same address");
        assert!(peers.enter(b).is_some(), "another address is not affected");
        drop(held);
        let again = peers.enter(a);
        assert!(again.is_some());
        assert_eq!(peers.held.lock().unwrap().len(), 1);
        drop(again);
        assert!(
            peers.held.lock().unwrap().is_empty(),
            "addresses that hold nothing are forgotten"
        );
    }
}
