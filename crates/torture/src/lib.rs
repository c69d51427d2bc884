//! tenure-torture: a fault-injection suite on real `tenure serve` processes (issue 18).
//!
//! A run starts a three-member cluster, each member in a network namespace of its own (on
//! loopback where namespaces cannot be made), runs a register workload through the etcd
//! gRPC API, lease and lock clients, and a watch of every key on each member, injects faults
//! from a seeded schedule (SIGKILL and restart, SIGSTOP and SIGCONT, partitions of one member,
//! of the leader, and one way, packet loss, added delay, throttled links, a full disk, crashes at
//! failpoints, membership changes, clock steps), heals them, lets the members converge, and checks what was recorded.
//!
//! | module | what it holds |
//! |---|---|
//! | [`schedule`] | faults and their windows, drawn from a seed |
//! | [`binary`] | finding (or building) the server binary |
//! | [`cluster`] | the member processes: start, kill, restart (with failpoints armed), pause, resume, fill and free a disk, who leads |
//! | [`net`] | on loopback: partitions and packet loss with iptables (per-member users, one chain), delay through a [`delay::Delayer`], throttles with tc HTB; [`net::Network`], either this or [`netns`] |
//! | [`netns`] | each member in a network namespace of its own on a bridge: cuts, loss, delay and throttles inside its namespace |
//! | [`delay`] | added delay without netem: a thread holding the packets of a netfilter queue for a fixed time |
//! | [`workload`] | the clients: read, write and cas over a few keys, recorded |
//! | [`k8s`] | Kubernetes-shaped traffic (CAS by mod_revision, paged lists, an informer with prev_kv, compaction) and its checker |
//! | [`election`] | Kubernetes-shaped leader election (a Lease object created where absent, renewed by CAS, on a TTL'd etcd lease) and its checker |
//! | [`leases`] | lease clients (keep-alives, then let go) and their checker |
//! | [`locks`] | lock clients (fencing tokens, guarded writes) and their checker |
//! | [`watchers`] | one watch from revision 1 per member, resumed across kills |
//! | [`check`] | the checkers: linearizability, watch guarantees, acknowledged writes, convergence, crashes |
//! | [`report`] | availability per fault window, the report as text and JSON |
//! | [`compare`] | a tenure run and an etcd run of one schedule, side by side |
//! | [`run`] | one run from start to report |
//!
//! Contract: a run never leaves anything behind. Every process it starts is killed, and every
//! firewall rule, qdisc and tmpfs it installs is removed, when the run ends, fails, or is
//! interrupted (the [`cluster::Cluster`] and [`net::Firewall`] clean up on drop); what a
//! SIGKILLed run left is removed by the next. Partitions are never faked: if the rules cannot be installed, a run
//! that asks for partitions refuses to start.

pub mod binary;
pub mod check;
pub mod cluster;
pub mod compare;
pub mod delay;
pub mod election;
pub mod k8s;
pub mod leases;
pub mod locks;
pub mod net;
pub mod netns;
pub mod report;
pub mod run;
pub mod schedule;
pub mod watchers;
pub mod workload;
