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

use crate::cluster::MemberSpec;

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
    shaper: Option<Shaper>,
    /// The thread holding delayed packets, while a delay is in force (its rules are in the
    /// raw table's chain of the same name).
    delayer: Option<crate::delay::Delayer>,
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
        let firewall = Firewall { chain, shaper: None, delayer: None };
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

    /// Drops `percent`% of the packets, chosen at random, on every peer connection of `member`
    /// (`peer_ports`: every member's peer port): those its user sends to a peer port (its
    /// messages) or from its own (its keepalives as acceptor), and those anyone sends to its
    /// peer port (messages to it). TCP retransmits what is lost, so the member's links stay up
    /// but slow and stuttering, as on a lossy network.
    ///
    /// # Errors
    /// [`FirewallError::Unavailable`] if iptables refuses a rule.
    pub fn lose(
        &self,
        member: &PeerEndpoint,
        peer_ports: &[u16],
        percent: u32,
    ) -> Result<(), FirewallError> {
        for matches in member_peer_traffic(member, peer_ports) {
            let mut args = vec!["-A".to_string(), self.chain.clone(), "-p".into(), "tcp".into()];
            args.extend(matches);
            args.extend(random_drop(percent));
            iptables(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        Ok(())
    }

    /// Shapes every peer connection of `member` (the packets [`Firewall::lose`] would pick) to
    /// `kbit` kbit/s on the loopback device, with an HTB class that the packets are put in by
    /// iptables' CLASSIFY (this kernel has no netem: see [`Shaper`]). What does not fit waits
    /// in the class's queue (latency that grows with the load) and is dropped when the queue is
    /// full. Installs the shaper first if it is not in place.
    ///
    /// # Errors
    /// [`FirewallError::Unavailable`] if tc or iptables refuses.
    pub fn throttle(
        &mut self,
        member: &PeerEndpoint,
        peer_ports: &[u16],
        kbit: u32,
    ) -> Result<(), FirewallError> {
        if self.shaper.is_none() {
            self.shaper = Some(Shaper::install(&self.chain)?);
        }
        tc(&[
            "class",
            "replace",
            "dev",
            "lo",
            "parent",
            SHAPER_ROOT,
            "classid",
            SHAPER_SLOW,
            "htb",
            "rate",
            &format!("{kbit}kbit"),
            "ceil",
            &format!("{kbit}kbit"),
            "burst",
            "4k",
            "cburst",
            "4k",
        ])?;
        for matches in member_peer_traffic(member, peer_ports) {
            let mut args = vec!["-t", "mangle", "-A", &self.chain, "-p", "tcp"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>();
            args.extend(matches);
            args.extend(["-j", "CLASSIFY", "--set-class", SHAPER_SLOW].map(String::from));
            iptables(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        Ok(())
    }

    /// Delays every packet on `member`'s peer connections by `delay` (the packets
    /// [`Firewall::lose`] would pick: its messages to its peers and theirs to it, each held
    /// once), with a [`crate::delay::Delayer`] thread of this process and NFQUEUE rules in the
    /// raw table (this kernel has no netem).
    ///
    /// # Errors
    /// [`FirewallError::Unavailable`] if the queue cannot be bound or iptables refuses.
    pub fn delay(
        &mut self,
        member: &PeerEndpoint,
        peer_ports: &[u16],
        delay: std::time::Duration,
    ) -> Result<(), FirewallError> {
        if let Some(old) = self.delayer.take() {
            // One delay at a time: a new one replaces the old, rules and all.
            remove_table_chain("raw", &self.chain);
            drop(old);
        }
        let delayer = crate::delay::Delayer::start(None, delay).map_err(|e| {
            FirewallError::Unavailable { args: "(nfqueue)".into(), detail: e.to_string() }
        })?;
        let target = delayer.target();
        self.delayer = Some(delayer);
        let _ = iptables(&["-t", "raw", "-N", &self.chain]);
        if iptables(&["-t", "raw", "-C", "OUTPUT", "-j", &self.chain]).is_err() {
            iptables(&["-t", "raw", "-I", "OUTPUT", "1", "-j", &self.chain])?;
        }
        for matches in member_peer_traffic(member, peer_ports) {
            let mut args = vec!["-t", "raw", "-A", &self.chain, "-p", "tcp"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>();
            args.extend(matches);
            args.extend(target.iter().cloned());
            iptables(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        Ok(())
    }

    /// How many packets the delay in force has held (0 without one).
    pub fn delayed_packets(&self) -> u64 {
        self.delayer.as_ref().map_or(0, crate::delay::Delayer::held)
    }

    /// Removes every cut, loss, delay and throttle (the shaper goes too, so that loopback is
    /// left as it was found between faults). A delay's rules go before its thread, which lets
    /// what it still holds through as it stops.
    ///
    /// # Errors
    /// [`FirewallError::Unavailable`] if iptables refuses.
    pub fn heal(&mut self) -> Result<(), FirewallError> {
        if let Some(shaper) = self.shaper.take() {
            shaper.remove();
        }
        if let Some(delayer) = self.delayer.take() {
            remove_table_chain("raw", &self.chain);
            drop(delayer);
        }
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
        if let Some(shaper) = self.shaper.take() {
            shaper.remove();
        }
        remove_chain(&self.chain);
        self.delayer.take();
    }
}

/// The iptables matches (after `-p tcp`) of every packet on `member`'s peer connections: its
/// user's packets to any peer port, its user's packets from its own peer port, and anyone's
/// packets to its peer port.
fn member_peer_traffic(member: &PeerEndpoint, peer_ports: &[u16]) -> Vec<Vec<String>> {
    let ports = peer_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    let uid = member.uid.to_string();
    let own = member.port.to_string();
    let owner = |dir: &str, ports: &str| {
        ["-m", "owner", "--uid-owner", &uid, "-m", "multiport", dir, ports]
            .map(String::from)
            .to_vec()
    };
    vec![
        owner("--dports", &ports),
        owner("--sports", &own),
        ["-d", &member.ip.to_string(), "--dport", &own].map(String::from).to_vec(),
    ]
}

/// Whether loss and throttles can be injected: `tc` runs and loopback's root qdisc is the
/// default one (or a shaper of this suite's that a dead run left, which the next removes).
///
/// # Errors
/// Why not, in a sentence.
pub fn shaping_available() -> Result<(), String> {
    let root = tc(&["qdisc", "show", "dev", "lo", "root"]).map_err(|e| e.to_string())?;
    if root.contains("noqueue") || root.contains("htb 7e57:") {
        Ok(())
    } else {
        Err(format!("loopback's root qdisc is in use ({})", root.trim()))
    }
}

/// tc's handle of the shaper's root qdisc on `lo`, its default class (unshaped) and its slow
/// class.
const SHAPER_ROOT: &str = "7e57:";
const SHAPER_FAST: &str = "7e57:1";
const SHAPER_SLOW: &str = "7e57:2";

fn tc(args: &[&str]) -> Result<String, FirewallError> {
    let unavailable = |detail: String| FirewallError::Unavailable {
        args: format!("(tc) {}", args.join(" ")),
        detail,
    };
    let out = Command::new("tc").args(args).output().map_err(|e| unavailable(e.to_string()))?;
    if !out.status.success() {
        return Err(unavailable(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An HTB qdisc at the root of `lo` while a throttle is in force: everything goes through its
/// default class at 100 Gbit/s, except what the run's mangle chain classifies into the slow
/// class. (tc netem, which would add delay and loss directly, is not in this kernel; loss is
/// done with iptables' statistic match instead, and delay with a netfilter queue and a thread,
/// [`crate::delay`].) Installed only over loopback's default
/// `noqueue` root, so another user's qdisc is never replaced; removed at the heal and on drop,
/// with the mangle chain's rules.
#[derive(Debug)]
pub struct Shaper {
    chain: String,
}

impl Shaper {
    /// Installs the root qdisc and the run's mangle chain (jumped to from mangle OUTPUT).
    ///
    /// # Errors
    /// [`FirewallError::Unavailable`] if loopback's root qdisc is not the default one, or tc
    /// or iptables refuses.
    pub fn install(chain: &str) -> Result<Shaper, FirewallError> {
        let root = tc(&["qdisc", "show", "dev", "lo", "root"])?;
        if root.contains("htb 7e57:") {
            // Left by a run that was SIGKILLed mid-throttle (runs install it only while a
            // throttle is in force, and a live run's mangle chain would say so).
            if !live_mangle_chain_exists(chain) {
                let _ = tc(&["qdisc", "del", "dev", "lo", "root"]);
            }
        }
        let root = tc(&["qdisc", "show", "dev", "lo", "root"])?;
        if !root.contains("noqueue") {
            return Err(FirewallError::Unavailable {
                args: "(tc) qdisc show dev lo".into(),
                detail: format!(
                    "loopback's root qdisc is in use ({}); not replacing it",
                    root.trim()
                ),
            });
        }
        tc(&[
            "qdisc",
            "add",
            "dev",
            "lo",
            "root",
            "handle",
            SHAPER_ROOT,
            "htb",
            "default",
            "1",
            "r2q",
            "100000",
        ])?;
        let shaper = Shaper { chain: chain.to_string() };
        tc(&[
            "class",
            "add",
            "dev",
            "lo",
            "parent",
            SHAPER_ROOT,
            "classid",
            SHAPER_FAST,
            "htb",
            "rate",
            "100gbit",
        ])?;
        let _ = iptables(&["-t", "mangle", "-N", chain]);
        iptables(&["-t", "mangle", "-I", "OUTPUT", "1", "-j", chain])?;
        Ok(shaper)
    }

    /// Removes the mangle chain and the root qdisc.
    pub fn remove(self) {
        remove_table_chain("mangle", &self.chain);
        if tc(&["qdisc", "show", "dev", "lo", "root"]).is_ok_and(|r| r.contains("htb 7e57:")) {
            let _ = tc(&["qdisc", "del", "dev", "lo", "root"]);
        }
    }
}

/// Removes `chain` from `table` (mangle: throttles; raw: delays) and OUTPUT's jump to it.
fn remove_table_chain(table: &str, chain: &str) {
    while iptables(&["-t", table, "-D", "OUTPUT", "-j", chain]).is_ok() {}
    let _ = iptables(&["-t", table, "-F", chain]);
    let _ = iptables(&["-t", table, "-X", chain]);
}

/// Whether a mangle `tort-<pid>` chain other than `ours` belongs to a live run.
fn live_mangle_chain_exists(ours: &str) -> bool {
    let Ok(rules) = iptables(&["-t", "mangle", "-S"]) else { return false };
    rules.lines().filter_map(|l| l.strip_prefix("-N ")).any(|chain| {
        chain != ours
            && chain
                .strip_prefix("tort-")
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(process_alive)
    })
}

/// Removes `chain` and the jump to it (and its mangle and raw twins), ignoring what is not
/// there.
fn remove_chain(chain: &str) {
    while iptables(&["-D", "OUTPUT", "-j", chain]).is_ok() {}
    let _ = iptables(&["-F", chain]);
    let _ = iptables(&["-X", chain]);
    remove_table_chain("mangle", chain);
    remove_table_chain("raw", chain);
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
    // Mangle chains (throttles) and raw chains (delays) of dead runs, and the shaper such a
    // run left on loopback. (A dead run's NFQUEUE rules pass packets undelayed meanwhile:
    // they carry --queue-bypass.)
    for table in ["mangle", "raw"] {
        let Ok(rules) = iptables(&["-t", table, "-S"]) else { continue };
        for chain in rules.lines().filter_map(|l| l.strip_prefix("-N ")) {
            let dead = chain
                .strip_prefix("tort-")
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| !process_alive(pid));
            if dead {
                remove_table_chain(table, chain);
            }
        }
    }
    if tc(&["qdisc", "show", "dev", "lo", "root"]).is_ok_and(|r| r.contains("htb 7e57:"))
        && !live_mangle_chain_exists("")
    {
        let _ = tc(&["qdisc", "del", "dev", "lo", "root"]);
    }
}

/// Where the members' network faults are injected: per-member users on loopback (this
/// module's [`Firewall`]) or each member's own namespace ([`crate::netns`]).
#[derive(Debug)]
pub enum Network {
    /// Members on 127.0.0.11..., told apart by their users (partitions, loss, throttles).
    Loopback(Firewall),
    /// Members in namespaces of their own.
    Namespaces(crate::netns::Namespaces),
}

/// Why a network fault could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// On loopback.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// In the namespaces.
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
}

impl Network {
    /// Member `from`'s messages to member `to` are lost.
    ///
    /// # Errors
    /// [`NetworkError`] if a rule is refused.
    pub fn cut(&self, specs: &[MemberSpec], from: usize, to: usize) -> Result<(), NetworkError> {
        match self {
            Network::Loopback(fw) => {
                fw.cut(&specs[from].peer_endpoint(), &specs[to].peer_endpoint())?
            }
            Network::Namespaces(ns) => ns.cut(from, to)?,
        }
        Ok(())
    }

    /// `percent`% of member `i`'s peer packets are dropped.
    ///
    /// # Errors
    /// [`NetworkError`] if a rule is refused.
    pub fn lose(&self, specs: &[MemberSpec], i: usize, percent: u32) -> Result<(), NetworkError> {
        match self {
            Network::Loopback(fw) => {
                let ports: Vec<u16> = specs.iter().map(|s| s.peer_port).collect();
                fw.lose(&specs[i].peer_endpoint(), &ports, percent)?;
            }
            Network::Namespaces(ns) => ns.lose(i, percent)?,
        }
        Ok(())
    }

    /// Member `i`'s peer links are shaped to `kbit` kbit/s.
    ///
    /// # Errors
    /// [`NetworkError`] if tc or a rule is refused.
    pub fn throttle(
        &mut self,
        specs: &[MemberSpec],
        i: usize,
        kbit: u32,
    ) -> Result<(), NetworkError> {
        match self {
            Network::Loopback(fw) => {
                let ports: Vec<u16> = specs.iter().map(|s| s.peer_port).collect();
                fw.throttle(&specs[i].peer_endpoint(), &ports, kbit)?;
            }
            Network::Namespaces(ns) => ns.throttle(i, kbit)?,
        }
        Ok(())
    }

    /// Every peer packet of member `i` is delayed by `delay` (its messages to its peers and
    /// theirs to it, each once).
    ///
    /// # Errors
    /// [`NetworkError`] if the queue cannot be bound or a rule is refused.
    pub fn delay(
        &mut self,
        specs: &[MemberSpec],
        i: usize,
        delay: std::time::Duration,
    ) -> Result<(), NetworkError> {
        match self {
            Network::Loopback(fw) => {
                let ports: Vec<u16> = specs.iter().map(|s| s.peer_port).collect();
                fw.delay(&specs[i].peer_endpoint(), &ports, delay)?;
            }
            Network::Namespaces(ns) => ns.delay(i, delay)?,
        }
        Ok(())
    }

    /// How many packets the delay in force has held so far (0 without one).
    pub fn delayed_packets(&self) -> u64 {
        match self {
            Network::Loopback(fw) => fw.delayed_packets(),
            Network::Namespaces(ns) => ns.delayed_packets(),
        }
    }

    /// Removes every cut, loss, delay and throttle.
    ///
    /// # Errors
    /// [`NetworkError`] if a flush is refused.
    pub fn heal(&mut self) -> Result<(), NetworkError> {
        match self {
            Network::Loopback(fw) => fw.heal()?,
            Network::Namespaces(ns) => ns.heal()?,
        }
        Ok(())
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

/// The end of an iptables rule that drops `percent`% of the packets it matches, chosen at
/// random (the `statistic` match): for packet loss on loopback and in namespaces alike.
pub(crate) fn random_drop(percent: u32) -> [String; 8] {
    let probability = format!("{:.4}", f64::from(percent.min(100)) / 100.0);
    ["-m", "statistic", "--mode", "random", "--probability", &probability, "-j", "DROP"]
        .map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_s_peer_traffic_is_its_user_s_to_peer_ports_from_its_own_and_anyone_s_to_it() {
        let member = PeerEndpoint { uid: 100_008, ip: Ipv4Addr::new(127, 0, 0, 12), port: 20_002 };
        let rules = member_peer_traffic(&member, &[20_001, 20_002, 20_003]);
        let joined: Vec<String> = rules.iter().map(|r| r.join(" ")).collect();
        assert_eq!(
            joined,
            [
                "-m owner --uid-owner 100008 -m multiport --dports 20001,20002,20003",
                "-m owner --uid-owner 100008 -m multiport --sports 20002",
                "-d 127.0.0.12 --dport 20002",
            ]
        );
    }
}
