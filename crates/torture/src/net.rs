//! Partitions between members on one loopback interface, with iptables.
//!
//! On loopback every member's outgoing connection leaves from `127.0.0.1`, whatever address
//! it listens on, so the source address cannot tell who sent a packet. The suite therefore runs
//! each member as a user of its own ([`crate::cluster`]), and a cut "from A to B" drops every
//! packet that A's user sends to B's peer address and port (the `owner` match of the OUTPUT
//! chain, which every loopback packet crosses once).
//!
//! tenure's messages flow from the member that dialled to the one that accepted (the acceptor
//! only writes keepalives back), so cutting A's packets to B's peer port loses A's messages to
//! B while B's dialled connection to A still carries B's messages: a one-way partition at the
//! message level. Cutting both directions isolates the pair.
//!
//! Rules live in a chain of this process's own (`tort-<pid>`) jumped to from OUTPUT, so that a
//! heal is one flush and cleaning up touches nothing else. The chain is removed when the
//! [`Firewall`] is dropped (a normal exit, an error, Ctrl-C), and chains left by a run that
//! was SIGKILLed (whose pid is gone) are removed by the next run.

use std::net::Ipv4Addr;
use std::process::Command;

/// Why the firewall cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// `iptables` failed; partitions need root (CAP_NET_ADMIN) and the iptables binary.
    #[error(
        "cannot install iptables rules (`iptables {args}`: {detail}); partitions need root and \
         iptables with the owner match; run with --no-partitions to inject kills and pauses only"
    )]
    Unavailable {
        /// The arguments of the command that failed.
        args: String,
        /// Its error output or why it could not run.
        detail: String,
    },
}

/// Where a member receives peer traffic, and the user it runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerEndpoint {
    /// The member's user id: its packets are told apart by it.
    pub uid: u32,
    /// The address of its peer listener.
    pub ip: Ipv4Addr,
    /// The port of its peer listener.
    pub port: u16,
}

/// This process's iptables chain; removed on drop.
#[derive(Debug)]
pub struct Firewall {
    chain: String,
}

fn iptables(args: &[&str]) -> Result<String, FirewallError> {
    let unavailable = |detail: String| FirewallError::Unavailable { args: args.join(" "), detail };
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| unavailable(e.to_string()))?;
    if !out.status.success() {
        return Err(unavailable(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Firewall {
    /// Creates this process's chain and jumps to it from OUTPUT, after removing chains that
    /// runs which are no longer alive left behind.
    ///
    /// # Errors
    /// [`FirewallError::Unavailable`] if iptables is missing or refuses (not root).
    pub fn install() -> Result<Firewall, FirewallError> {
        remove_stale_chains();
        let chain = format!("tort-{}", std::process::id());
        // A chain of this name can only be left over from a dead process with our pid.
        remove_chain(&chain);
        iptables(&["-N", &chain])?;
        let firewall = Firewall { chain };
        iptables(&["-I", "OUTPUT", "1", "-j", &firewall.chain])?;
        Ok(firewall)
    }

    /// The chain's name.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// Drops every packet `from`'s user sends to `to`'s peer listener.
    ///
    /// # Errors
    /// [`FirewallError::Unavailable`] if iptables refuses the rule.
    pub fn cut(&self, from: &PeerEndpoint, to: &PeerEndpoint) -> Result<(), FirewallError> {
        iptables(&[
            "-A",
            &self.chain,
            "-p",
            "tcp",
            "-m",
            "owner",
            "--uid-owner",
            &from.uid.to_string(),
            "-d",
            &to.ip.to_string(),
            "--dport",
            &to.port.to_string(),
            "-j",
            "DROP",
        ])
        .map(|_| ())
    }

    /// Removes every cut.
    ///
    /// # Errors
    /// [`FirewallError::Unavailable`] if iptables refuses.
    pub fn heal(&self) -> Result<(), FirewallError> {
        iptables(&["-F", &self.chain]).map(|_| ())
    }

    /// How many cuts are in force.
    pub fn cut_count(&self) -> usize {
        iptables(&["-S", &self.chain])
            .map(|s| s.lines().filter(|l| l.starts_with("-A ")).count())
            .unwrap_or(0)
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        remove_chain(&self.chain);
    }
}

/// Removes `chain` and the jump to it, ignoring what is not there.
fn remove_chain(chain: &str) {
    while iptables(&["-D", "OUTPUT", "-j", chain]).is_ok() {}
    let _ = iptables(&["-F", chain]);
    let _ = iptables(&["-X", chain]);
}

/// Removes the `tort-<pid>` chains whose process is gone.
fn remove_stale_chains() {
    let Ok(rules) = iptables(&["-S"]) else { return };
    for line in rules.lines() {
        let Some(chain) = line.strip_prefix("-N ") else { continue };
        let Some(pid) = chain.strip_prefix("tort-").and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !process_alive(pid) {
            remove_chain(chain);
        }
    }
}

/// Whether process `pid` runs: it exists and is not a zombie (a killed run whose parent has not
/// reaped it yet is as dead as one that is gone).
pub(crate) fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses and may hold spaces.
        stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z")
    })
}
