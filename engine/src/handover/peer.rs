//! Who may take part in a handover: the credentials of the process at the
//! other end of the rendezvous socket, checked against the application's
//! allow-list. Pure: credentials in, a decision out.

/// The credentials of the process at the other end of a Unix socket, as the
/// kernel reports them (`SO_PEERCRED`: taken when the socket was connected,
/// not claimed by the peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    /// Its process id.
    pub pid: i32,
    /// Its user id.
    pub uid: u32,
    /// Its group id.
    pub gid: u32,
}

/// The processes a handover endpoint deals with. The default,
/// [`Allow::same_user`], is the process's own user only: another user's
/// process — root included — is refused unless named.
///
/// ```
/// use netmend::handover::{Allow, PeerCred};
///
/// let me = PeerCred { pid: 10, uid: 1000, gid: 1000 };
/// let other = PeerCred { pid: 11, uid: 1001, gid: 100 };
/// assert!(Allow::same_user().permits(me, 1000));
/// assert!(!Allow::same_user().permits(other, 1000));
/// assert!(Allow::same_user().gid(100).permits(other, 1000));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allow {
    same_user: bool,
    uids: Vec<u32>,
    gids: Vec<u32>,
    pids: Vec<i32>,
}

impl Default for Allow {
    fn default() -> Self {
        Allow::same_user()
    }
}

impl Allow {
    /// Processes of the calling process's own user.
    pub fn same_user() -> Allow {
        Allow {
            same_user: true,
            uids: Vec::new(),
            gids: Vec::new(),
            pids: Vec::new(),
        }
    }

    /// Nobody but what is added with [`uid`](Self::uid), [`gid`](Self::gid)
    /// or [`pid`](Self::pid).
    pub fn only() -> Allow {
        Allow {
            same_user: false,
            ..Allow::same_user()
        }
    }

    /// Also processes of user `uid`.
    #[must_use]
    pub fn uid(mut self, uid: u32) -> Allow {
        self.uids.push(uid);
        self
    }

    /// Also processes of group `gid` (their primary group).
    #[must_use]
    pub fn gid(mut self, gid: u32) -> Allow {
        self.gids.push(gid);
        self
    }

    /// Also the process `pid` (a pid can be reused after that process
    /// exits: pair it with a user where that matters).
    #[must_use]
    pub fn pid(mut self, pid: i32) -> Allow {
        self.pids.push(pid);
        self
    }

    /// Whether `peer` may take part, for a process running as `own_uid`.
    pub fn permits(&self, peer: PeerCred, own_uid: u32) -> bool {
        (self.same_user && peer.uid == own_uid)
            || self.uids.contains(&peer.uid)
            || self.gids.contains(&peer.gid)
            || self.pids.contains(&peer.pid)
    }
}
