//! Each member in a network namespace of its own, joined by a bridge.
//!
//! ```text
//!   host (the suite's clients)          router namespace tort-<pid>-br         member namespaces
//!   tv<pid> 10.77.S.1/24  ──veth──  up0 ─┐
//!                                        br0 ── m1 ──veth── eth0 10.77.S.11 (tort-<pid>-n1)
//!                                            ── m2 ──veth── eth0 10.77.S.12 (tort-<pid>-n2) ...
//! ```
//!
//! Every member listens on its own address with the ports a deployment uses (2379 for clients,
//! 2380 for peers), so its peer traffic is told apart by port and address alone: a cut "from A
//! to B" is an iptables rule in A's namespace dropping what A sends to B's 2380; packet loss is
//! the statistic match on all of a member's peer traffic, in and out, in its namespace; a
//! delay is NFQUEUE rules on the same traffic in its namespace's raw table, the packets held by
//! a thread of the suite's that entered the namespace ([`crate::delay`]); a
//! throttle is an HTB qdisc on both ends of its link (its `eth0` for what it sends, the router's
//! `m<i>` for what it receives), peer packets classified by tc's u32 match on port 2380. Nothing
//! is installed in the host's own tables: the bridge lives in a namespace of its own, so the
//! host's FORWARD chain (Docker's DROP policy with `br_netfilter`) never sees member-to-member
//! packets, and the host reaches the members over its own veth into the bridge.
//!
//! The namespaces (and with them every veth, rule and qdisc inside) are deleted when
//! [`Namespaces`] is dropped; namespaces of a run whose process is gone are deleted by the next.

use std::net::Ipv4Addr;
use std::process::Command;

/// Why the namespaces cannot be set up or driven.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// `ip`, `iptables` or `tc` failed (network namespaces need root: CAP_SYS_ADMIN and
    /// CAP_NET_ADMIN).
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output, or why it could not run.
        detail: String,
    },
    /// Every 10.77.S.0/24 subnet is in use on the host.
    #[error("no free 10.77.S.0/24 subnet on the host")]
    NoSubnet,
}

/// The client port every member listens on, in its own namespace.
pub const CLIENT_PORT: u16 = 2379;
/// The peer port every member listens on, in its own namespace.
pub const PEER_PORT: u16 = 2380;

/// tc's handles of a throttle's root qdisc, its default (unshaped) class and its slow class.
const ROOT: &str = "7e57:";
const FAST: &str = "7e57:1";
const SLOW: &str = "7e57:2";

fn run(command: &[&str]) -> Result<String, NetnsError> {
    let failed = |detail: String| NetnsError::Command { command: command.join(" "), detail };
    let out =
        Command::new(command[0]).args(&command[1..]).output().map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `command` inside namespace `ns`.
fn run_in(ns: &str, command: &[&str]) -> Result<String, NetnsError> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(command);
    run(&full)
}

/// The namespaces of one run: a router holding the bridge, and one per member slot.
#[derive(Debug)]
pub struct Namespaces {
    /// `tort-<pid>`: the prefix of every namespace's name.
    prefix: String,
    /// The host's end of its link to the bridge.
    host_link: String,
    /// The third octet of 10.77.S.0/24.
    subnet: u8,
    /// How many member namespaces there are.
    slot_count: usize,
    /// The thread holding a member's delayed packets, while a delay is in force.
    delayer: Option<crate::delay::Delayer>,
}

impl Namespaces {
    /// Creates the router namespace with its bridge, the host's link to it, and `slot_count`
    /// member namespaces, after deleting what runs that are no longer alive left.
    ///
    /// # Errors
    /// [`NetnsError`] if a namespace, link or address cannot be made (not root, no `ip`).
    pub fn create(slot_count: usize) -> Result<Namespaces, NetnsError> {
        remove_stale();
        let pid = std::process::id();
        let prefix = format!("tort-{pid}");
        let subnet = free_subnet(pid)?;
        let namespaces =
            Namespaces { prefix, host_link: format!("tv{pid}"), subnet, slot_count, delayer: None };
        // A namespace of this name can only be a dead process's with our pid.
        namespaces.delete();
        namespaces.build()?;
        Ok(namespaces)
    }

    fn build(&self) -> Result<(), NetnsError> {
        let router = self.router();
        run(&["ip", "netns", "add", &router])?;
        run_in(&router, &["ip", "link", "set", "lo", "up"])?;
        run_in(&router, &["ip", "link", "add", "br0", "type", "bridge"])?;
        run_in(&router, &["ip", "link", "set", "br0", "up"])?;
        run(&[
            "ip",
            "link",
            "add",
            &self.host_link,
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            &router,
        ])?;
        run_in(&router, &["ip", "link", "set", "up0", "master", "br0", "up"])?;
        let host_cidr = format!("{}/24", self.host_address());
        run(&["ip", "addr", "add", &host_cidr, "dev", &self.host_link])?;
        run(&["ip", "link", "set", &self.host_link, "up"])?;
        for i in 0..self.slot_count {
            let ns = self.member(i);
            run(&["ip", "netns", "add", &ns])?;
            run_in(&ns, &["ip", "link", "set", "lo", "up"])?;
            let port = router_port(i);
            run_in(
                &router,
                &["ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns],
            )?;
            run_in(&router, &["ip", "link", "set", &port, "master", "br0", "up"])?;
            let cidr = format!("{}/24", self.address(i));
            run_in(&ns, &["ip", "addr", "add", &cidr, "dev", "eth0"])?;
            run_in(&ns, &["ip", "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// The router namespace's name.
    fn router(&self) -> String {
        format!("{}-br", self.prefix)
    }

    /// Member slot `i`'s namespace.
    pub fn member(&self, i: usize) -> String {
        format!("{}-n{}", self.prefix, i + 1)
    }

    /// Member slot `i`'s address.
    pub fn address(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 11 + i as u8)
    }

    /// The host's address on the bridge (the suite's clients connect from it).
    pub fn host_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    /// How many member namespaces there are.
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        format!(
            "network namespaces: {} members on 10.77.{}.11-{} (ports {CLIENT_PORT}/{PEER_PORT}), \
             bridged in {}",
            self.slot_count,
            self.subnet,
            10 + self.slot_count,
            self.router()
        )
    }

    /// Drops every packet member `from` sends to member `to`'s peer port (in `from`'s
    /// namespace): `from`'s messages to `to` are lost, `to`'s still arrive.
    ///
    /// # Errors
    /// [`NetnsError`] if iptables refuses.
    pub fn cut(&self, from: usize, to: usize) -> Result<(), NetnsError> {
        let (ns, to) = (self.member(from), self.address(to).to_string());
        let port = PEER_PORT.to_string();
        let rule = ["iptables", "-w", "-A", "OUTPUT", "-p", "tcp", "-d", &to, "--dport", &port];
        run_in(&ns, &[&rule[..], &["-j", "DROP"]].concat()).map(|_| ())
    }

    /// Drops `percent`% of member `i`'s peer packets, chosen at random, both ways: everything
    /// it sends to or from port 2380 and everything it receives to or from port 2380.
    ///
    /// # Errors
    /// [`NetnsError`] if iptables refuses.
    pub fn lose(&self, i: usize, percent: u32) -> Result<(), NetnsError> {
        let ns = self.member(i);
        let port = PEER_PORT.to_string();
        for (chain, dir) in [
            ("OUTPUT", "--dport"),
            ("OUTPUT", "--sport"),
            ("INPUT", "--dport"),
            ("INPUT", "--sport"),
        ] {
            let drop = crate::net::random_drop(percent);
            let mut args = vec!["iptables", "-w", "-A", chain, "-p", "tcp", dir, &port];
            args.extend(drop.iter().map(String::as_str));
            run_in(&ns, &args)?;
        }
        Ok(())
    }

    /// Shapes member `i`'s peer traffic to `kbit` kbit/s each way (HTB on its `eth0` and on
    /// the router's port to it; client traffic stays in the unshaped default class).
    ///
    /// # Errors
    /// [`NetnsError`] if tc refuses.
    pub fn throttle(&self, i: usize, kbit: u32) -> Result<(), NetnsError> {
        let rate = format!("{kbit}kbit");
        let port = PEER_PORT.to_string();
        for (ns, dev) in [(self.member(i), "eth0".to_string()), (self.router(), router_port(i))] {
            let tc = |args: &[&str]| {
                let mut full = vec!["tc"];
                full.extend_from_slice(args);
                run_in(&ns, &full)
            };
            tc(&["qdisc", "replace", "dev", &dev, "root", "handle", ROOT, "htb", "default", "1"])?;
            tc(&[
                "class", "replace", "dev", &dev, "parent", ROOT, "classid", FAST, "htb", "rate",
                "10gbit",
            ])?;
            tc(&[
                "class", "replace", "dev", &dev, "parent", ROOT, "classid", SLOW, "htb", "rate",
                &rate, "ceil", &rate, "burst", "4k", "cburst", "4k",
            ])?;
            for field in ["sport", "dport"] {
                tc(&[
                    "filter", "add", "dev", &dev, "parent", ROOT, "protocol", "ip", "prio", "1",
                    "u32", "match", "ip", field, &port, "0xffff", "flowid", SLOW,
                ])?;
            }
        }
        Ok(())
    }

    /// Delays every peer packet of member `i` by `delay`, both ways: what it sends to or from
    /// port 2380 (raw OUTPUT) and what it receives to or from port 2380 (raw PREROUTING), held
    /// by a [`crate::delay::Delayer`] thread inside its namespace.
    ///
    /// # Errors
    /// [`NetnsError`] if the queue cannot be bound or iptables refuses.
    pub fn delay(&mut self, i: usize, delay: std::time::Duration) -> Result<(), NetnsError> {
        let ns = self.member(i);
        if let Some(old) = self.delayer.take() {
            // One delay at a time: a new one replaces the old, rules and all.
            for j in 0..self.slot_count {
                let _ = run_in(&self.member(j), &["iptables", "-w", "-t", "raw", "-F"]);
            }
            drop(old);
        }
        let delayer = crate::delay::Delayer::start(Some(&ns), delay).map_err(|e| {
            NetnsError::Command { command: format!("(nfqueue in {ns})"), detail: e.to_string() }
        })?;
        let target = delayer.target();
        self.delayer = Some(delayer);
        let port = PEER_PORT.to_string();
        for (chain, dir) in [
            ("OUTPUT", "--dport"),
            ("OUTPUT", "--sport"),
            ("PREROUTING", "--dport"),
            ("PREROUTING", "--sport"),
        ] {
            let mut args =
                vec!["iptables", "-w", "-t", "raw", "-A", chain, "-p", "tcp", dir, &port];
            args.extend(target.iter().map(String::as_str));
            run_in(&ns, &args)?;
        }
        Ok(())
    }

    /// How many packets the delay in force has held so far (0 without one).
    pub fn delayed_packets(&self) -> u64 {
        self.delayer.as_ref().map_or(0, crate::delay::Delayer::held)
    }

    /// Removes every cut, loss, delay and throttle. A delay's rules go before its thread,
    /// which lets what it still holds through as it stops.
    ///
    /// # Errors
    /// [`NetnsError`] if iptables refuses a flush.
    pub fn heal(&mut self) -> Result<(), NetnsError> {
        for i in 0..self.slot_count {
            let ns = self.member(i);
            run_in(&ns, &["iptables", "-w", "-F"])?;
            run_in(&ns, &["iptables", "-w", "-t", "raw", "-F"])?;
            let _ = run_in(&ns, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
            let _ = run_in(&self.router(), &["tc", "qdisc", "del", "dev", &router_port(i), "root"]);
        }
        self.delayer.take();
        Ok(())
    }

    /// How many iptables rules are in force in the members' namespaces (filter and raw).
    pub fn rule_count(&self) -> usize {
        (0..self.slot_count)
            .flat_map(|i| {
                let ns = self.member(i);
                [["iptables", "-w", "-S"].as_slice(), &["iptables", "-w", "-t", "raw", "-S"]]
                    .map(|cmd| run_in(&ns, cmd).ok())
            })
            .flatten()
            .map(|s| s.lines().filter(|l| l.starts_with("-A ")).count())
            .sum()
    }

    fn delete(&self) {
        for i in 0..self.slot_count {
            let _ = run(&["ip", "netns", "del", &self.member(i)]);
        }
        let _ = run(&["ip", "netns", "del", &self.router()]);
        // Gone with its peer in the router namespace; this is for a half-built set.
        let _ = run(&["ip", "link", "del", &self.host_link]);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // The thread first: its socket is in a namespace about to go.
        self.delayer.take();
        self.delete();
    }
}

/// The router namespace's port to member slot `i`.
fn router_port(i: usize) -> String {
    format!("m{}", i + 1)
}

/// Whether network namespaces can be made here: creates and deletes one.
///
/// # Errors
/// Why not, in a sentence.
pub fn available() -> Result<(), String> {
    let probe = format!("tort-{}-probe", std::process::id());
    run(&["ip", "netns", "add", &probe]).map_err(|e| format!("no network namespaces: {e}"))?;
    let veth =
        run_in(&probe, &["ip", "link", "add", "name", "va", "type", "veth", "peer", "name", "vb"]);
    let _ = run(&["ip", "netns", "del", &probe]);
    veth.map(|_| ()).map_err(|e| format!("no veth pairs in a namespace: {e}"))
}

/// A 10.77.S.0/24 no address on the host is in, starting from one drawn from `pid`.
fn free_subnet(pid: u32) -> Result<u8, NetnsError> {
    let addrs = run(&["ip", "-o", "-4", "addr", "show"])?;
    let start = (pid % 200) as u8 + 20;
    (0..200u8)
        .map(|k| 20 + (start - 20 + k) % 200)
        .find(|s| !addrs.contains(&format!(" 10.77.{s}.")))
        .ok_or(NetnsError::NoSubnet)
}

/// Deletes the namespaces (`tort-<pid>-*`) of runs whose process is gone.
fn remove_stale() {
    let Ok(list) = run(&["ip", "netns", "list"]) else { return };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix("tort-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !crate::net::process_alive(pid) {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Namespaces need root; where they cannot be made, the test says so and passes (the
    /// suite then runs on loopback).
    #[test]
    fn namespaces_reach_each_other_and_the_host_until_cut_and_are_gone_after_drop() {
        if let Err(e) = available() {
            eprintln!("skipped: {e}");
            return;
        }
        let mut ns = Namespaces::create(2).expect("namespaces");
        let ping = |from: Option<usize>, to: Ipv4Addr| {
            let to = to.to_string();
            let cmd = ["ping", "-c", "1", "-W", "1", &to];
            match from {
                Some(i) => run_in(&ns.member(i), &cmd).is_ok(),
                None => run(&cmd).is_ok(),
            }
        };
        if run(&["ping", "-V"]).is_err() {
            eprintln!("skipped the reachability part: no ping");
        } else {
            assert!(ping(Some(0), ns.address(1)), "n1 reaches n2");
            assert!(ping(None, ns.address(0)), "the host reaches n1");
        }
        ns.cut(0, 1).expect("a cut");
        ns.lose(1, 20).expect("loss");
        ns.throttle(1, 100).expect("a throttle");
        assert_eq!(ns.rule_count(), 5);
        match ns.delay(0, std::time::Duration::from_millis(30)) {
            Ok(()) => assert_eq!(ns.rule_count(), 9),
            Err(e) => eprintln!("no delay here: {e}"),
        }
        let qdisc = run_in(&ns.member(1), &["tc", "qdisc", "show", "dev", "eth0"]).expect("tc");
        assert!(qdisc.contains("htb 7e57:"), "{qdisc}");
        ns.heal().expect("healed");
        assert_eq!(ns.rule_count(), 0);
        let qdisc = run_in(&ns.member(1), &["tc", "qdisc", "show", "dev", "eth0"]).expect("tc");
        assert!(!qdisc.contains("htb"), "{qdisc}");
        let names = [ns.member(0), ns.member(1), ns.router()];
        drop(ns);
        let left = run(&["ip", "netns", "list"]).expect("ip netns list");
        for name in names {
            assert!(!left.lines().any(|l| l.split_whitespace().next() == Some(&name)), "{left}");
        }
    }
}
