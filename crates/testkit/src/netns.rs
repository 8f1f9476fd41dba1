//! Test hosts of their own on this machine: a [`NetNs`] is a network namespace joined to
//! this host by a veth pair on a private /30 (a random block of 10.128.0.0/9 no interface
//! uses yet, so parallel tests never share one), with a default route back to the host; a
//! [`Host`] adds its own host name (a UTS namespace per command) and its own HOME/XDG tree.
//! [`NetNs::cut`] sets the host end of the link down: packets stop with no FIN or RST, as
//! when a cable is pulled. Everything is deleted on drop. Needs root and iproute2; if a
//! namespace cannot be made the test fails (it never skips).

use crate::{Env, Proc, isolate, rota_bin};
use std::net::Ipv4Addr;
use std::process::Command;

/// Runs `ip ARGS`; panics naming the command and its stderr if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("cannot run `ip`: {e}"));
    assert!(
        out.status.success(),
        "`ip {}` failed ({}): {} (network namespace tests need root and iproute2)",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The IPv4 addresses configured on this host's interfaces (of this namespace).
fn addresses_in_use() -> Vec<Ipv4Addr> {
    let out = Command::new("ip").args(["-4", "-o", "addr", "show"]).output().expect("ip addr show");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.split('/').next()?.parse().ok())
        .collect()
}

/// A network namespace linked to this host by a veth pair.
pub struct NetNs {
    /// The namespace's name (`ip netns exec NAME`).
    pub name: String,
    /// The host end of the veth pair.
    pub host_if: String,
    /// This host's address on the link (reachable from the namespace).
    pub host_addr: Ipv4Addr,
    /// The namespace's address on the link.
    pub ns_addr: Ipv4Addr,
}

impl Default for NetNs {
    fn default() -> Self {
        Self::new()
    }
}

impl NetNs {
    /// Creates the namespace, its link and addresses; panics if it cannot.
    pub fn new() -> NetNs {
        let tag = format!("{:08x}", rand::random::<u32>());
        let in_use = addresses_in_use();
        let base = loop {
            // 10.128.0.0/9 holds 2^21 blocks of four addresses.
            let block = rand::random::<u32>() % (1 << 21);
            let base = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + block * 4;
            if !in_use.iter().any(|a| u32::from(*a) & !3 == base) {
                break base;
            }
        };
        let ns = NetNs {
            name: format!("rota-test-{tag}"),
            host_if: format!("rt{tag}h"),
            host_addr: Ipv4Addr::from(base + 1),
            ns_addr: Ipv4Addr::from(base + 2),
        };
        ip(&["netns", "add", &ns.name]);
        // From here on, drop deletes whatever was made.
        let ns_if = format!("rt{tag}n");
        let (host_cidr, ns_cidr) = (format!("{}/30", ns.host_addr), format!("{}/30", ns.ns_addr));
        ip(&["link", "add", &ns.host_if, "type", "veth", "peer", "name", &ns_if]);
        ip(&["link", "set", &ns_if, "netns", &ns.name]);
        ip(&["addr", "add", &host_cidr, "dev", &ns.host_if]);
        ip(&["link", "set", &ns.host_if, "up"]);
        ip(&["-n", &ns.name, "addr", "add", &ns_cidr, "dev", &ns_if]);
        ip(&["-n", &ns.name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        // Other namespaces' host ends are this host's addresses too: reach them through it.
        ip(&["-n", &ns.name, "route", "add", "default", "via", &ns.host_addr.to_string()]);
        ns
    }

    /// Cuts the link: the host end goes down, so nothing gets in or out, and no FIN or RST
    /// tells either side.
    pub fn cut(&self) {
        ip(&["link", "set", &self.host_if, "down"]);
    }

    /// Brings the link back.
    pub fn restore(&self) {
        ip(&["link", "set", &self.host_if, "up"]);
    }

    /// `program` run inside the namespace under host name `hostname` (its own UTS
    /// namespace). `ip netns exec`, `unshare` and `sh` all exec, so the child's pid is
    /// `program`'s own.
    pub fn command(&self, hostname: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.name,
            "unshare",
            "--uts",
            "sh",
            "-c",
            r#"hostname "$0" && exec "$@""#,
        ])
        .args([hostname, program]);
        cmd
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the host end deletes the pair; the namespace goes when its last process does.
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A test host: its own network namespace, host name and HOME/XDG tree, pointed at a
/// server elsewhere (`env.url`).
pub struct Host {
    /// Its network.
    pub ns: NetNs,
    /// Its HOME/XDG tree (`url` is the server's).
    pub env: Env,
    /// Its host name (unique per test run).
    pub hostname: String,
}

impl Host {
    /// A host named `<label>-<random>`; set `env.url` once its server listens.
    pub fn new(label: &str) -> Host {
        let ns = NetNs::new();
        let env = Env::new();
        let hostname = format!("{label}-{:04x}", rand::random::<u16>());
        Host { ns, env, hostname }
    }

    /// `rota ARGS` on this host, in its own tree, pointed at the server.
    pub fn rota(&self, args: &[&str]) -> Command {
        let mut cmd = self.ns.command(&self.hostname, rota_bin().to_str().expect("utf-8 path"));
        isolate(&mut cmd, &self.env);
        cmd.args(args);
        cmd
    }

    /// This host's workspace directory for worker `name`.
    pub fn workspace(&self, name: &str) -> std::path::PathBuf {
        self.env.path(&format!("ws-{name}"))
    }

    /// `rota worker run --name NAME --workspace <its dir> ARGS` on this host; returns once
    /// it registered.
    pub fn spawn_worker(&self, name: &str, args: &[&str]) -> Proc {
        let ws = self.workspace(name);
        let ws = ws.to_str().expect("utf-8 path");
        let mut full = vec!["worker", "run", "--name", name, "--workspace", ws];
        full.extend_from_slice(args);
        Proc::spawn(self.rota(&full), "rota worker ready").0
    }
}
