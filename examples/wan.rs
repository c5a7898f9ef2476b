//! A user-space wide-area link for the tests and benchmarks (issue 23):
//! delay, jitter, reordering and random loss, which this machine's kernel
//! cannot add (no netem). Rate and queue stay with `tc tbf`.
//!
//! Not part of the product: a Cargo example so it shares the crate's
//! dependencies. It runs in a router namespace and owns a TUN device there;
//! policy routing sends the forwarded packets it should hold into the
//! device, and what it writes back is routed on as if it had just arrived.
//!
//! ```text
//! wan --dev wan0 --host 10.233.1.2=delay:25ms,jitter:5ms,loss:1%,reorder [--host …] [--seed N]
//! ```
//!
//! Each `--host` is one end's access link: every packet from or to that
//! address is held `delay` (± up to `jitter`, uniformly) and dropped with
//! probability `loss`. A packet between two such hosts pays both. Packets
//! of one direction between two addresses keep their order, as in a queue,
//! unless one end says `reorder`: then jitter can overtake. Prints `ready`
//! on stdout once the device is up; runs until killed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
#[command(about = "A user-space WAN link: delay, jitter, reordering, loss")]
struct Args {
    /// The TUN device to create.
    #[arg(long, default_value = "wan0")]
    dev: String,
    /// ADDRESS=delay:25ms,jitter:5ms,loss:1%,reorder (repeatable).
    #[arg(long = "host", value_parser = parse_host, required = true)]
    hosts: Vec<(Ipv4Addr, Profile)>,
    /// Seeds jitter and loss, for runs that repeat.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// One end's access link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Profile {
    delay: Duration,
    jitter: Duration,
    /// Probability of a drop, 0..1.
    loss: f64,
    reorder: bool,
}

fn parse_host(s: &str) -> anyhow::Result<(Ipv4Addr, Profile)> {
    let (addr, spec) = s
        .split_once('=')
        .with_context(|| format!("{s:?}: expected ADDRESS=delay:25ms,…"))?;
    let addr = addr
        .parse()
        .with_context(|| format!("{addr:?} is not an IPv4 address"))?;
    let mut p = Profile::default();
    for item in spec.split(',').filter(|i| !i.is_empty()) {
        let (key, value) = item.split_once(':').unwrap_or((item, ""));
        match key {
            "delay" | "jitter" => {
                let d = humantime::parse_duration(value).with_context(|| {
                    format!("{key} {value:?}: expected a duration such as 25ms")
                })?;
                if key == "delay" {
                    p.delay = d;
                } else {
                    p.jitter = d;
                }
            }
            "loss" => {
                let pct: f64 = value
                    .trim_end_matches('%')
                    .parse()
                    .with_context(|| format!("loss {value:?}: expected a percentage"))?;
                if !(0.0..=100.0).contains(&pct) {
                    bail!("loss {value:?}: expected 0% to 100%");
                }
                p.loss = pct / 100.0;
            }
            "reorder" => p.reorder = true,
            _ => bail!("{item:?}: expected delay:, jitter:, loss: or reorder"),
        }
    }
    Ok((addr, p))
}

/// The link's decisions, free of I/O: when a packet leaves, or that it is
/// lost.
struct Link<R> {
    hosts: HashMap<Ipv4Addr, Profile>,
    /// The last release time per (source, destination), which in-order
    /// packets may not precede.
    last: HashMap<(Ipv4Addr, Ipv4Addr), Instant>,
    rng: R,
}

impl<R: Rng> Link<R> {
    fn new(hosts: impl IntoIterator<Item = (Ipv4Addr, Profile)>, rng: R) -> Self {
        Self {
            hosts: hosts.into_iter().collect(),
            last: HashMap::new(),
            rng,
        }
    }

    /// When `packet`, arriving at `now`, leaves; `None` if it is lost.
    /// Packets that are not IPv4 pass at once.
    fn admit(&mut self, now: Instant, packet: &[u8]) -> Option<Instant> {
        if packet.len() < 20 || packet[0] >> 4 != 4 {
            return Some(now);
        }
        let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
        let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        let mut at = now;
        let mut reorder = false;
        for addr in [src, dst] {
            let Some(p) = self.hosts.get(&addr).copied() else {
                continue;
            };
            if p.loss > 0.0 && self.rng.random_bool(p.loss) {
                return None;
            }
            at += p.delay;
            if !p.jitter.is_zero() {
                let j = p.jitter.as_secs_f64() * self.rng.random_range(-1.0..=1.0);
                at = if j >= 0.0 {
                    at + Duration::from_secs_f64(j)
                } else {
                    at.checked_sub(Duration::from_secs_f64(-j))
                        .map_or(now, |t| t.max(now))
                };
            }
            reorder |= p.reorder;
        }
        if !reorder {
            let last = self.last.entry((src, dst)).or_insert(at);
            at = at.max(*last);
            *last = at;
        }
        Some(at)
    }
}

/// Packets waiting for their time, earliest first.
#[derive(Default)]
struct Held {
    heap: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
    seq: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = tun::Configuration::default();
    config.tun_name(&args.dev).up();
    let dev = Arc::new(
        tun::create(&config).with_context(|| format!("creating TUN device {}", args.dev))?,
    );
    let held = Arc::new((Mutex::new(Held::default()), Condvar::new()));
    let writer = {
        let (dev, held) = (dev.clone(), held.clone());
        std::thread::spawn(move || release(&dev, &held))
    };
    println!("ready");
    let mut link = Link::new(args.hosts, rand::rngs::StdRng::seed_from_u64(args.seed));
    let mut buf = vec![0u8; 65536];
    loop {
        let n = dev.recv(&mut buf).context("reading the TUN device")?;
        let Some(at) = link.admit(Instant::now(), &buf[..n]) else {
            continue;
        };
        let (lock, ready) = &*held;
        let mut h = lock.lock().unwrap();
        let seq = h.seq;
        h.seq += 1;
        h.heap.push(Reverse((at, seq, buf[..n].to_vec())));
        ready.notify_one();
        if writer.is_finished() {
            bail!("the writer stopped");
        }
    }
}

/// Writes each held packet back into the device once its time has come.
fn release(dev: &tun::Device, held: &(Mutex<Held>, Condvar)) -> anyhow::Result<()> {
    let (lock, ready) = held;
    let mut h = lock.lock().unwrap();
    loop {
        let now = Instant::now();
        match h.heap.peek() {
            None => h = ready.wait(h).unwrap(),
            Some(Reverse((at, _, _))) if *at > now => {
                let wait = *at - now;
                h = ready.wait_timeout(h, wait).unwrap().0;
            }
            Some(_) => {
                let Reverse((_, _, packet)) = h.heap.pop().unwrap();
                drop(h);
                // A full device or a packet the kernel refuses is a lost
                // packet, as on a real link.
                let _ = dev.send(&packet);
                h = lock.lock().unwrap();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    fn link(hosts: &[(&str, &str)]) -> Link<rand::rngs::StdRng> {
        let hosts = hosts
            .iter()
            .map(|(a, s)| parse_host(&format!("{a}={s}")).unwrap());
        Link::new(hosts, rand::rngs::StdRng::seed_from_u64(7))
    }

    #[test]
    fn a_packet_between_two_delayed_hosts_pays_both_delays() {
        let mut l = link(&[("10.0.0.1", "delay:25ms"), ("10.0.0.2", "delay:10ms")]);
        let now = Instant::now();
        let at = l.admit(now, &packet([10, 0, 0, 1], [10, 0, 0, 2])).unwrap();
        assert_eq!(at - now, Duration::from_millis(35));
        let at = l.admit(now, &packet([10, 0, 0, 3], [10, 0, 0, 2])).unwrap();
        assert_eq!(at - now, Duration::from_millis(10), "only the known end");
        let at = l.admit(now, &packet([10, 0, 0, 3], [10, 0, 0, 4])).unwrap();
        assert_eq!(at, now, "strangers pass at once");
        assert_eq!(l.admit(now, &[0x60; 40]), Some(now), "IPv6 passes");
    }

    #[test]
    fn jitter_stays_within_its_bound_and_keeps_order_unless_told() {
        let mut l = link(&[("10.0.0.1", "delay:50ms,jitter:20ms")]);
        let start = Instant::now();
        let mut last = start;
        let mut spread = (Duration::MAX, Duration::ZERO);
        for k in 0..1000u64 {
            let now = start + Duration::from_millis(k);
            let at = l.admit(now, &packet([10, 0, 0, 1], [10, 0, 0, 9])).unwrap();
            assert!(at >= last, "packet {k} overtook the one before");
            last = at;
            let d = at - now;
            spread = (spread.0.min(d), spread.1.max(d));
        }
        assert!(spread.0 >= Duration::from_millis(30), "{spread:?}");
        // In order, a packet can wait behind a later one's draw a little
        // longer than delay + jitter: by less than the packet spacing.
        assert!(spread.1 <= Duration::from_millis(71), "{spread:?}");

        let mut l = link(&[("10.0.0.1", "delay:50ms,jitter:20ms,reorder")]);
        let mut overtaken = 0;
        let mut last = start;
        for k in 0..1000u64 {
            let now = start + Duration::from_millis(k);
            let at = l.admit(now, &packet([10, 0, 0, 1], [10, 0, 0, 9])).unwrap();
            overtaken += usize::from(at < last);
            last = at;
        }
        assert!(overtaken > 100, "only {overtaken} of 1000 reordered");
    }

    #[test]
    fn loss_drops_about_its_share() {
        let mut l = link(&[("10.0.0.1", "loss:5%")]);
        let now = Instant::now();
        let lost = (0..20_000)
            .filter(|_| {
                l.admit(now, &packet([10, 0, 0, 9], [10, 0, 0, 1]))
                    .is_none()
            })
            .count();
        assert!((800..1200).contains(&lost), "{lost} of 20,000 lost");
    }

    #[test]
    fn bad_profiles_name_what_to_fix() {
        for (spec, says) in [
            ("10.0.0.1", "expected ADDRESS="),
            ("10.0.0=delay:1ms", "not an IPv4 address"),
            ("10.0.0.1=loss:120%", "expected 0% to 100%"),
            ("10.0.0.1=speed:1", "expected delay:"),
            ("10.0.0.1=delay:soon", "soon"),
        ] {
            let err = format!("{:#}", parse_host(spec).unwrap_err());
            assert!(err.contains(says), "{spec}: {err}");
        }
    }
}
