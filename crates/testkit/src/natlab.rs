//! The internet on one machine, for tests of peers behind NATs: network
//! namespaces for a public segment and for homes, each home behind its own
//! NAT router (after Tailscale's natlab and libp2p's hole-punch testbed).
//!
//! ```text
//!   home k: host (192.168.k.2) -- lan -- router (192.168.k.1 | 100.64.k.2) -- wan --+
//!                                                                                  |
//!   internet: 100.64.k.1 on each wan; 203.0.113.1 and .2 on its loopback, where  --+
//!             the signal-server and coturn (STUN on both addresses) run
//! ```
//!
//! The routers masquerade their homes' traffic (iptables `MASQUERADE` on the
//! wan side), in one of three ways ([`Nat`]): endpoint-independent mapping
//! (Linux keeps the source port, so one mapping serves every destination:
//! the "easy" NAT hole punching gets through), address-and-port-dependent
//! mapping (`--random-fully`: a new port per destination, the "hard" or
//! symmetric NAT that needs a relay), and a network that drops UDP
//! altogether (TCP only). Every router filters what comes in by its
//! connection tracking, as home routers do: only replies pass. Homes'
//! private addresses are not routed on the internet, so host candidates
//! never connect across homes.
//!
//! Needs root and `ip`, `iptables` (as [`crate::netns`]; `cfg(netns_tests)`
//! says where it can run). Dropping the [`Internet`] deletes every namespace
//! of it: stop the processes in them first (drop their guards before it).

use std::net::Ipv4Addr;

use crate::netns::{ip, remove_stale, Namespace};

/// The public address of the internet's services (signal-server, STUN/TURN).
pub const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// A second public address of the same machine: a STUN server here too lets
/// a host see whether its NAT maps it per destination.
pub const SERVER_2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

/// How a home's router treats traffic from its home to the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Endpoint-independent mapping ("easy"): the same public port for
    /// every destination, so a STUN server's answer holds for peers too.
    Easy,
    /// Address-and-port-dependent mapping ("hard", symmetric): a random
    /// public port per destination.
    Symmetric,
    /// An easy NAT whose network drops every UDP packet (a TCP-only
    /// office network).
    UdpBlocked,
}

/// One home: a host behind its router.
#[derive(Debug)]
pub struct Home {
    /// Where the home's peer runs (its address: 192.168.k.2).
    pub host: Namespace,
    /// The NAT router (its address: the public 100.64.k.2).
    pub router: Namespace,
    /// How the router translates.
    pub nat: Nat,
}

/// The public segment and the homes attached to it.
#[derive(Debug)]
pub struct Internet {
    /// The public segment's namespace: services run here, on [`SERVER`] and
    /// [`SERVER_2`].
    pub public: Namespace,
    /// Where the public segment's default route leads: packets to
    /// addresses no home has (a home's private ones, say) vanish there, as
    /// on the internet, instead of failing at the sender. Without it coturn
    /// sends a check to a peer's private host candidate, gets ENETUNREACH
    /// and tears the whole allocation down.
    beyond: Namespace,
    homes: Vec<Home>,
}

impl Internet {
    /// The public segment, with no home yet. Panics when the namespace
    /// cannot be made (not root, `ip` missing).
    pub fn new() -> Self {
        remove_stale();
        let net = Self {
            public: Namespace::named("i", SERVER),
            beyond: Namespace::named("x", Ipv4Addr::new(10, 255, 0, 2)),
            homes: Vec::new(),
        };
        for ns in [&net.public, &net.beyond] {
            ip(&["netns", "add", ns.name()]);
            ip(&["-n", ns.name(), "link", "set", "lo", "up"]);
        }
        let name = net.public.name();
        for addr in [SERVER, SERVER_2] {
            ip(&[
                "-n",
                name,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "lo",
            ]);
        }
        forward(&net.public);
        // The beyond does not forward: what reaches it is dropped quietly.
        veth(&net.public, "void", &net.beyond, "void");
        ip(&["-n", name, "addr", "add", "10.255.0.1/30", "dev", "void"]);
        ip(&[
            "-n",
            net.beyond.name(),
            "addr",
            "add",
            "10.255.0.2/30",
            "dev",
            "void",
        ]);
        for ns in [&net.public, &net.beyond] {
            ip(&["-n", ns.name(), "link", "set", "void", "up"]);
        }
        ip(&["-n", name, "route", "add", "default", "via", "10.255.0.2"]);
        net
    }

    /// Adds home number `homes + 1` behind a router translating as `nat`;
    /// returns it.
    pub fn add_home(&mut self, nat: Nat) -> &Home {
        let k = u8::try_from(self.homes.len() + 1).expect("fewer than 255 homes");
        let home = Home {
            host: Namespace::named("h", Ipv4Addr::new(192, 168, k, 2)),
            router: Namespace::named("r", Ipv4Addr::new(100, 64, k, 2)),
            nat,
        };
        // Kept before it is built: a failure below still deletes it.
        self.homes.push(home);
        let home = self.homes.last().expect("just pushed");
        let (router, host) = (home.router.name(), home.host.name());
        for ns in [router, host] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let wan = format!("wan{k}");
        veth(&self.public, &wan, &home.router, "wan");
        veth(&home.router, "lan", &home.host, "lan");
        let public = self.public.name();
        ip(&[
            "-n",
            public,
            "addr",
            "add",
            &format!("100.64.{k}.1/24"),
            "dev",
            &wan,
        ]);
        ip(&["-n", public, "link", "set", &wan, "up"]);
        ip(&[
            "-n",
            router,
            "addr",
            "add",
            &format!("100.64.{k}.2/24"),
            "dev",
            "wan",
        ]);
        ip(&[
            "-n",
            router,
            "addr",
            "add",
            &format!("192.168.{k}.1/24"),
            "dev",
            "lan",
        ]);
        ip(&[
            "-n",
            host,
            "addr",
            "add",
            &format!("192.168.{k}.2/24"),
            "dev",
            "lan",
        ]);
        for (ns, dev) in [(router, "wan"), (router, "lan"), (host, "lan")] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&[
            "-n",
            router,
            "route",
            "add",
            "default",
            "via",
            &format!("100.64.{k}.1"),
        ]);
        ip(&[
            "-n",
            host,
            "route",
            "add",
            "default",
            "via",
            &format!("192.168.{k}.1"),
        ]);
        forward(&home.router);
        let r = &home.router;
        let mut masquerade = vec![
            "-w",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "wan",
            "-j",
            "MASQUERADE",
        ];
        if nat == Nat::Symmetric {
            masquerade.push("--random-fully");
        }
        r.run("iptables", &masquerade);
        // Only replies come in, to the home or to the router itself: a
        // home router's stateful filter. Dropping the unsolicited ones at
        // INPUT also keeps the mapping endpoint-independent: a peer's check
        // that arrives before this side's first packet to it would
        // otherwise leave a conntrack entry on the router's own address
        // and port, and the NAT would pick another port for the outgoing
        // flow (a dropped packet's entry is never confirmed).
        for chain in ["FORWARD", "INPUT"] {
            r.run(
                "iptables",
                &[
                    "-w",
                    "-A",
                    chain,
                    "-i",
                    "wan",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                ],
            );
            r.run("iptables", &["-w", "-A", chain, "-i", "wan", "-j", "DROP"]);
        }
        if nat == Nat::UdpBlocked {
            r.run(
                "iptables",
                &["-w", "-I", "FORWARD", "1", "-p", "udp", "-j", "DROP"],
            );
        }
        self.homes.last().expect("just pushed")
    }
}

impl Internet {
    /// The homes, in the order they were added.
    pub fn homes(&self) -> &[Home] {
        &self.homes
    }
}

impl Default for Internet {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        let homes = self.homes.iter().flat_map(|h| [&h.host, &h.router]);
        for ns in homes.chain([&self.public, &self.beyond]) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns.name()])
                .status();
        }
    }
}

/// A veth pair: `a_dev` in `a`, `b_dev` in `b` (created inside the
/// namespaces, so names never meet in the host's).
fn veth(a: &Namespace, a_dev: &str, b: &Namespace, b_dev: &str) {
    ip(&[
        "link",
        "add",
        a_dev,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_dev,
        "netns",
        b.name(),
    ]);
}

/// Turns IPv4 forwarding on in `ns` (a router).
fn forward(ns: &Namespace) {
    ns.run("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
}
