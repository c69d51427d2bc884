//! Added network delay without netem: iptables sends the packets to an NFQUEUE, and a thread of
//! this process holds each one for a fixed time before letting it through.
//!
//! This kernel has no `sch_netem` (nor `sch_fq`, whose departure times could otherwise be set),
//! so delay cannot be a qdisc. Netfilter's queue hands each matching packet to a user-space
//! program and waits for its verdict; the [`Delayer`] thread asks only for the packets'
//! metadata (copy range 0, whole GSO packets), remembers when each arrived, and accepts it
//! `delay` later. The delay is fixed, so packets leave in the order they came and TCP sees no
//! reordering, only a longer path. The rules use `--queue-bypass`, so a packet that finds no
//! program bound (the thread gone) passes undelayed instead of being dropped, and the queue
//! fails open: when it is full a packet passes undelayed too. The rules live in the `raw`
//! table, whose OUTPUT and PREROUTING hooks run before mangle and filter, so a packet released
//! here still meets the run's throttles and cuts.
//!
//! A queue belongs to one network namespace: for a member in a namespace of its own the thread
//! enters that namespace (`setns`) before it opens its netlink socket.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why packets cannot be delayed.
#[derive(Debug, thiserror::Error)]
pub enum DelayError {
    /// The netlink queue could not be opened or bound (needs root: CAP_NET_ADMIN, and the
    /// kernel's `nfnetlink_queue`), or the namespace could not be entered.
    #[error("cannot hold packets in an NFQUEUE ({what}): {source}")]
    Queue {
        /// What failed.
        what: String,
        /// The system's error.
        source: io::Error,
    },
}

/// The first queue number tried; the suite's queues are `QUEUE_BASE..QUEUE_BASE + 4096`.
const QUEUE_BASE: u16 = 0x7e57;
/// How many packets the kernel keeps queued at most before letting more through undelayed.
const QUEUE_MAX_LEN: u32 = 16_384;
/// The thread looks for new packets and due releases this often at least.
const POLL: Duration = Duration::from_millis(1);

/// A thread holding the packets of one netfilter queue for a fixed time. Dropping it stops the
/// thread, which first lets every packet it still holds through.
#[derive(Debug)]
pub struct Delayer {
    queue_num: u16,
    delay: Duration,
    stop: Arc<AtomicBool>,
    /// Packets held so far, for the report.
    held: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Delayer {
    /// Starts a thread that binds the first free queue number from this process's range (in the
    /// namespace `netns`, a name under `/run/netns`, or in this process's own) and holds every
    /// packet queued to it for `delay`. Returns once the queue is bound: rules may then send
    /// packets to [`Delayer::queue_num`].
    ///
    /// # Errors
    /// [`DelayError`] if the namespace cannot be entered or no queue can be bound.
    pub fn start(netns: Option<&str>, delay: Duration) -> Result<Delayer, DelayError> {
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicU64::new(0));
        let (bound_tx, bound_rx) = mpsc::channel();
        let netns = netns.map(str::to_string);
        let thread = {
            let (stop, held) = (stop.clone(), held.clone());
            std::thread::Builder::new()
                .name("torture-delay".into())
                .spawn(move || {
                    let queue = netns
                        .as_deref()
                        .map_or(Ok(()), enter_netns)
                        .and_then(|()| bind_free_queue(std::process::id()));
                    match queue {
                        Ok((queue, num)) => {
                            let _ = bound_tx.send(Ok(num));
                            hold(queue, num, delay, &stop, &held);
                        }
                        Err(e) => {
                            let _ = bound_tx.send(Err(e));
                        }
                    }
                })
                .map_err(|source| DelayError::Queue { what: "a thread".into(), source })?
        };
        let bound = bound_rx.recv().unwrap_or_else(|_| {
            Err(DelayError::Queue {
                what: "the delay thread".into(),
                source: io::Error::other("exited before binding a queue"),
            })
        });
        match bound {
            Ok(queue_num) => Ok(Delayer { queue_num, delay, stop, held, thread: Some(thread) }),
            Err(e) => {
                let _ = thread.join();
                Err(e)
            }
        }
    }

    /// The queue number the rules must send packets to (`-j NFQUEUE --queue-num N`).
    pub fn queue_num(&self) -> u16 {
        self.queue_num
    }

    /// The delay each packet gets.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// How many packets have been held so far.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// The end of an iptables rule (after its matches) that sends what it matches here.
    pub fn target(&self) -> [String; 5] {
        ["-j", "NFQUEUE", "--queue-num", &self.queue_num.to_string(), "--queue-bypass"]
            .map(String::from)
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether packets can be delayed here: binds a queue in this process's namespace and lets it
/// go.
///
/// # Errors
/// Why not, in a sentence.
pub fn available() -> Result<(), String> {
    Delayer::start(None, Duration::from_millis(1)).map(drop).map_err(|e| e.to_string())
}

/// Enters the network namespace `name` (`/run/netns/<name>`, as `ip netns add` makes it), for
/// this thread only.
#[allow(unsafe_code)]
fn enter_netns(name: &str) -> Result<(), DelayError> {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path)
        .map_err(|source| DelayError::Queue { what: format!("opening {path}"), source })?;
    // SAFETY: `setns` is given an open namespace file descriptor (kept open by `file` for the
    // call) and the matching type; it changes only the calling thread's network namespace and
    // touches no memory of this process.
    let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if result != 0 {
        let source = io::Error::last_os_error();
        return Err(DelayError::Queue { what: format!("entering {path}"), source });
    }
    Ok(())
}

/// Opens a netlink queue socket and binds the first queue number of this process's range that
/// no one else holds (runs in parallel each have their own range; a number taken by another
/// socket is refused with EBUSY, and the next is tried).
fn bind_free_queue(pid: u32) -> Result<(nfq::Queue, u16), DelayError> {
    fn failed(what: &'static str) -> impl Fn(io::Error) -> DelayError {
        move |source| DelayError::Queue { what: what.into(), source }
    }
    let start = (pid % 256) as u16 * 16;
    let mut last = None;
    for k in 0..4096u16 {
        let num = QUEUE_BASE.wrapping_add((start + k) % 4096);
        let mut queue = nfq::Queue::open().map_err(failed("opening a netlink socket"))?;
        match queue.bind(num) {
            Ok(()) => {
                queue.set_copy_range(num, 0).map_err(failed("asking for metadata only"))?;
                queue.set_recv_gso(num, true).map_err(failed("taking whole GSO packets"))?;
                queue.set_fail_open(num, true).map_err(failed("setting the queue to fail open"))?;
                queue.set_queue_max_len(num, QUEUE_MAX_LEN).map_err(failed("sizing the queue"))?;
                queue.set_nonblocking(true);
                return Ok((queue, num));
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
            Err(e) => return Err(failed("binding a queue")(e)),
        }
    }
    Err(failed("binding a queue")(last.unwrap_or_else(|| io::Error::other("every number taken"))))
}

/// The thread's loop: take what the kernel queued, let through what has waited `delay`, until
/// asked to stop; then let everything still held through and unbind.
fn hold(mut queue: nfq::Queue, num: u16, delay: Duration, stop: &AtomicBool, count: &AtomicU64) {
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let accept = |queue: &mut nfq::Queue, mut msg: nfq::Message| {
        msg.set_verdict(nfq::Verdict::Accept);
        // A verdict that cannot be sent leaves the packet to the kernel, which drops it when
        // the socket closes: TCP sends it again.
        let _ = queue.verdict(msg);
    };
    while !stop.load(Ordering::Relaxed) {
        loop {
            match queue.recv() {
                Ok(msg) => {
                    count.fetch_add(1, Ordering::Relaxed);
                    held.push_back((Instant::now() + delay, msg));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: nothing more queued. Anything else (ENOBUFS is turned off) ends
                // this round; the next poll tries again.
                Err(_) => break,
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            let (_, msg) = held.pop_front().expect("a held packet");
            accept(&mut queue, msg);
        }
        let wait = held.front().map_or(POLL, |(due, _)| due.saturating_duration_since(now));
        std::thread::sleep(wait.min(POLL));
    }
    for (_, msg) in held.drain(..) {
        accept(&mut queue, msg);
    }
    let _ = queue.unbind(num);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::Command;

    fn run(args: &[&str]) -> Result<String, String> {
        let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A namespace of the test's own, deleted on drop.
    struct Netns(String);

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = run(&["ip", "netns", "del", &self.0]);
        }
    }

    /// The median of 20 request/response round trips over one TCP connection inside `ns`, on
    /// port `port`.
    fn round_trip(ns: &str, port: u16) -> Duration {
        let ns = ns.to_string();
        std::thread::spawn(move || {
            enter_netns(&ns).expect("into the namespace");
            let listener = TcpListener::bind(("127.0.0.1", port)).expect("listen");
            let echo = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().expect("accept");
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    s.write_all(&buf[..n]).expect("echo");
                }
            });
            // Bounded, so that packets dropped instead of passed fail the test, not hang it.
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let bound = Duration::from_secs(5);
            let mut client = TcpStream::connect_timeout(&addr, bound).expect("connect");
            client.set_read_timeout(Some(bound)).expect("read timeout");
            client.set_nodelay(true).expect("nodelay");
            let mut times = Vec::new();
            for i in 0..20u8 {
                let started = Instant::now();
                client.write_all(&[i; 16]).expect("write");
                let mut back = [0u8; 16];
                client.read_exact(&mut back).expect("read");
                assert_eq!(back, [i; 16], "bytes come back in order and whole");
                times.push(started.elapsed());
            }
            drop(client);
            echo.join().expect("the echo thread");
            times.sort();
            times[times.len() / 2]
        })
        .join()
        .expect("the round-trip thread")
    }

    /// Root only (namespaces, iptables, netlink queues): where any is missing the test says so
    /// and passes.
    #[test]
    fn packets_queued_to_a_delayer_arrive_that_much_later_in_order_and_pass_again_after_it_stops() {
        let name = format!("tort-{}-delaytest", std::process::id());
        if let Err(e) = run(&["ip", "netns", "add", &name]) {
            eprintln!("skipped: no network namespace ({e})");
            return;
        }
        let ns = Netns(name);
        run(&["ip", "netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"]).expect("lo up");
        let port = 5555u16;
        let before = round_trip(&ns.0, port);

        let delay = Duration::from_millis(40);
        let delayer = match Delayer::start(Some(&ns.0), delay) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        let target = delayer.target();
        // Each way: the request leaves for the port, the answer leaves from it.
        for dir in ["--dport", "--sport"] {
            let p = port.to_string();
            let mut rule = vec!["ip", "netns", "exec", &ns.0, "iptables", "-w", "-t", "raw"];
            rule.extend(["-A", "OUTPUT", "-p", "tcp", dir, &p]);
            rule.extend(target.iter().map(String::as_str));
            if let Err(e) = run(&rule) {
                eprintln!("skipped: no NFQUEUE target ({e})");
                return;
            }
        }
        // Another port's packets never reach the queue.
        round_trip(&ns.0, port + 1);
        assert_eq!(delayer.held(), 0, "the rules match port {port} only");
        // No packet arrives before its hold ends: a round trip takes two holds at least (the
        // bound above it only catches a thread that holds far too long, not a slow machine).
        let delayed = round_trip(&ns.0, port);
        assert!(delayed >= 2 * delay, "{delayed:?} with {delay:?} each way (before: {before:?})");
        assert!(delayed < 2 * delay + Duration::from_secs(1), "{delayed:?}: held too long");
        assert!(delayer.held() >= 40, "{} packets held", delayer.held());

        // The thread gone, the rules (still there) let everything through: --queue-bypass.
        drop(delayer);
        let rules = run(&["ip", "netns", "exec", &ns.0, "iptables", "-w", "-t", "raw", "-S"]);
        assert_eq!(rules.expect("rules").matches("NFQUEUE").count(), 2);
        round_trip(&ns.0, port);
    }
}
