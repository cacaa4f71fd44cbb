//! The mesh most scenarios run on: the real `signal-server`, two real `peer`
//! workers running `echo`, and a submitter — an in-process daemon (the
//! library API) or a `peer` process reached through its control socket.
//! Blobs go over WebRTC (`--handover-dir off`) unless the mesh is started
//! with a shared handover directory ([`Mesh::start_handing_over`]).

use std::time::Duration;

use anyhow::Context;
use jobmesh_peer::{DaemonConfig, PeerHandle, StrategyKind};
use jobmesh_transport::rtc::RtcConfig;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::env::{self, Proc};
use crate::Ctx;

/// How long any setup step may take.
pub(crate) const SETUP: Duration = Duration::from_secs(20);

pub(crate) struct Mesh {
    pub(crate) url: String,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) workers: Vec<Proc>,
    /// The daemons' shared handover directory; `None`: off.
    handover: Option<std::path::PathBuf>,
    _server: Proc,
    stop: CancellationToken,
}

impl Mesh {
    /// The server and `workers` worker processes running `echo`.
    pub(crate) fn start(ctx: &Ctx, workers: usize) -> anyhow::Result<Self> {
        Self::start_with(ctx, workers, false)
    }

    /// [`start`](Self::start), the daemons sharing a handover directory:
    /// blobs between them go as files (docs/architecture.md, "Same-host
    /// handover").
    pub(crate) fn start_handing_over(ctx: &Ctx, workers: usize) -> anyhow::Result<Self> {
        Self::start_with(ctx, workers, true)
    }

    fn start_with(ctx: &Ctx, workers: usize, handover: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let handover = handover.then(|| dir.path().join("handover"));
        let flag = handover
            .as_deref()
            .map_or(Ok("off"), |d| d.to_str().context("temp dir is not UTF-8"))?
            .to_owned();
        let (server, url) = env::signal_server(&ctx.bins, &[])?;
        let workers = (0..workers)
            .map(|i| {
                let name = format!("w{i}");
                let sock = dir.path().join(format!("{name}.sock"));
                let extra = ["--handover-dir", flag.as_str()];
                env::peer_with(&ctx.bins, &url, "bench", &name, "echo", &sock, &extra)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            url,
            dir,
            workers,
            handover,
            _server: server,
            stop: CancellationToken::new(),
        })
    }

    /// An in-process submit-only daemon that sees every worker and has a
    /// link open to each (warmed up: setup is not part of any figure).
    pub(crate) async fn submitter(&self, name: &str) -> anyhow::Result<PeerHandle> {
        self.submitter_with(name, false).await
    }

    /// [`submitter`](Self::submitter), with a journal in the mesh's temp dir
    /// when `journaled` (every submit waits for its disk sync).
    pub(crate) async fn submitter_with(
        &self,
        name: &str,
        journaled: bool,
    ) -> anyhow::Result<PeerHandle> {
        let mut config = DaemonConfig::new(&self.url, name, "bench");
        config.membership = jobmesh_peer::Membership::Open;
        config.slots = 0;
        config.data_dir = journaled.then(|| self.dir.path().join(format!("{name}.data")));
        config.handover_dir.clone_from(&self.handover);
        config.rtc = RtcConfig {
            udp_addrs: vec!["127.0.0.1:0".into()],
            ..RtcConfig::default()
        };
        let h = jobmesh_peer::spawn(config, self.stop.child_token())?;
        let n = self.workers.len();
        h.wait_pool(SETUP, |s| {
            s.peers.iter().filter(|p| p.stats.slots > 0).count() >= n
        })
        .await
        .context("waiting for the workers to join")?;
        let mut o = jobmesh_peer::JobOptions::from(SETUP);
        o.strategy = Some(StrategyKind::RoundRobin);
        for _ in 0..2 * n {
            h.run(echo(), json!("warm"), o.clone())
                .await?
                .result
                .context("warm-up job")?;
        }
        Ok(h)
    }

    /// A `peer` submitter process serving HTTP too (`--http`); returns
    /// it, its control socket path and its HTTP address.
    pub(crate) async fn control_submitter(
        &self,
        ctx: &Ctx,
    ) -> anyhow::Result<(Proc, std::path::PathBuf, std::net::SocketAddr)> {
        let sock = self.dir.path().join("s.sock");
        // A free port: taken here, given back, named to the daemon.
        let http = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let flag = http.to_string();
        let handover = match &self.handover {
            Some(d) => d.to_str().context("temp dir is not UTF-8")?,
            None => "off",
        };
        let p = env::peer_with(
            &ctx.bins,
            &self.url,
            "bench",
            "s",
            "",
            &sock,
            &["--http", &flag, "--handover-dir", handover],
        )?;
        // It needs to see the workers before its first job is placed without
        // waiting: poll its pool view through the control socket.
        let deadline = tokio::time::Instant::now() + SETUP;
        loop {
            let reply =
                jobmesh_peer::control::request(&sock, &jobmesh_peer::control::Request::Peers)
                    .await?;
            let capable = reply["peers"].as_array().map_or(0, |ps| {
                ps.iter()
                    .filter(|p| p["stats"]["slots"].as_u64() > Some(0))
                    .count()
            });
            if capable >= self.workers.len() {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the control submitter never saw the workers"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok((p, sock, http))
    }

    /// Stops the in-process daemons (processes go with the guards).
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(crate) fn echo() -> jobmesh_wire::Capability {
    jobmesh_wire::Capability::new("echo").unwrap_or_else(|_| unreachable!("a valid name"))
}
