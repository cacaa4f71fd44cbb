//! The physical limit in the same run: a bare webrtc 0.21 data channel
//! between two in-process peers, and a plain TCP socket on loopback.
//!
//! The data channel is built with the webrtc API directly (not jobmesh's
//! link layer) but with the settings jobmesh uses (`crates/transport/src/rtc.rs`):
//! loopback host candidates only, the 4 MiB-socket-buffer runtime, a 4 MiB
//! send-buffer limit, 20 ms ICE checks, non-trickle offer/answer handed over
//! in-process.
//!
//! * Ping-pong: one 64 B message from `a`, echoed by `b`; warm-up round trips
//!   first, then the timed ones; a sample is one repeat's p50 or p99.
//! * Bulk: `a` sends N MiB as 64 KiB messages (the send waits while the send
//!   buffer is full), then a 1-byte end marker; `b` stamps the time when the
//!   marker arrives (the channel is ordered, so every byte is in). MB = 10^6.
//! * Setup: from creating both peer connections to the channel being open on
//!   both sides; a fresh pair per repeat. The other figures reuse one pair.
//!
//! TCP does the same over tokio `TcpStream`s with `TCP_NODELAY`.
//!
//! Everything spawned here is aborted or closed before [`run`] returns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCSessionDescription, SettingEngineBuilder,
};

use crate::report::{quantile, Figure};
use crate::Ctx;

const SCENARIO: &str = "raw";
/// Ping-pong message size.
const PING: usize = 64;
/// Bulk message (data channel) or write (TCP) size.
const CHUNK: usize = 64 * 1024;
/// The bulk end marker's size: no other message has it.
const END: usize = 1;
/// The data channels' send-buffer limit, as jobmesh's notes recommend for bulk.
const SEND_BUFFER_LIMIT: usize = 4 * 1024 * 1024;
/// Deadline for one connection setup (both sides open).
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for ICE gathering of one side.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for one round trip.
const RTT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for one bulk transfer.
const BULK_TIMEOUT: Duration = Duration::from_secs(300);
/// The `b` side's report queue (one report per bulk transfer).
const REPORTS: usize = 4;
/// One burst: the size of a payload job's blob.
const BURST: usize = 1 << 20;
/// Bursts per repeat (as many as the payload scenario's sequential jobs).
const BURSTS: usize = 30;

/// Counts for one run.
struct Plan {
    warmup: usize,
    timed: usize,
    bulk_bytes: usize,
}

pub(crate) async fn run(ctx: Ctx) -> anyhow::Result<Vec<Figure>> {
    let plan = if ctx.quick {
        Plan {
            warmup: 50,
            timed: 200,
            bulk_bytes: 32 << 20,
        }
    } else {
        Plan {
            warmup: 200,
            timed: 1000,
            bulk_bytes: 256 << 20,
        }
    };
    let mut figures = webrtc_figures(&ctx, &plan)
        .await
        .context("webrtc data channel")?;
    figures.extend(tcp_figures(&ctx, &plan).await.context("TCP on loopback")?);
    Ok(figures)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// (p50, p99) of round trips in ms.
fn p50_p99(rtts: &mut [f64]) -> (f64, f64) {
    (quantile(rtts, 0.5), quantile(rtts, 0.99))
}

// ---------------------------------------------------------------- webrtc

async fn webrtc_figures(ctx: &Ctx, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
    let mut setup = Vec::new();
    for i in 0..ctx.repeats {
        let t = Instant::now();
        let pair = Pair::connect()
            .await
            .with_context(|| format!("connection setup {}", i + 1))?;
        setup.push(ms(t.elapsed()));
        pair.close().await;
    }

    let mut pair = Pair::connect().await.context("connection setup")?;
    let measured = measure_webrtc(ctx, plan, &mut pair).await;
    pair.close().await;
    let ((p50, p99, bulk), bursts) = measured?;
    Ok(vec![
        Figure::new(SCENARIO, "webrtc 64 B ping-pong p50", "ms", p50),
        Figure::new(SCENARIO, "webrtc 64 B ping-pong p99", "ms", p99),
        Figure::new(SCENARIO, "webrtc bulk, 64 KiB messages", "MB/s", bulk),
        Figure::new(
            SCENARIO,
            "webrtc 1 MiB bursts one at a time, 64 KiB messages",
            "MB/s",
            bursts,
        ),
        Figure::new(SCENARIO, "webrtc channel setup", "ms", setup),
    ])
}

/// p50s, p99s and bulk rates per repeat.
type Samples = (Vec<f64>, Vec<f64>, Vec<f64>);

async fn measure_webrtc(
    ctx: &Ctx,
    plan: &Plan,
    pair: &mut Pair,
) -> anyhow::Result<(Samples, Vec<f64>)> {
    let (mut p50, mut p99, mut bulk, mut bursts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..ctx.repeats {
        let mut rtts = pair
            .ping_pong(plan)
            .await
            .with_context(|| format!("ping-pong, repeat {}", i + 1))?;
        let (a, b) = p50_p99(&mut rtts);
        p50.push(a);
        p99.push(b);
        let took = pair
            .bulk(plan.bulk_bytes)
            .await
            .with_context(|| format!("bulk, repeat {}", i + 1))?;
        bulk.push(mb_per_s(plan.bulk_bytes, took));
        // What a payload job's transfer meets: 1 MiB on a channel that was
        // idle, each burst timed until the receiver had all of it.
        let mut took = Duration::ZERO;
        for _ in 0..BURSTS {
            took += pair
                .bulk(BURST)
                .await
                .with_context(|| format!("1 MiB burst, repeat {}", i + 1))?;
        }
        bursts.push(mb_per_s(BURSTS * BURST, took));
    }
    Ok(((p50, p99, bulk), bursts))
}

/// Forwards webrtc's callbacks into channels; never waits (webrtc runs them
/// inline on the connection's driver task).
///
/// Written out by hand in the shape `#[async_trait]` generates, which this
/// crate does not depend on.
struct Forwarder {
    gathered: mpsc::Sender<()>,
    incoming: mpsc::Sender<Arc<dyn DataChannel>>,
}

type Done<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

impl PeerConnectionEventHandler for Forwarder {
    fn on_ice_gathering_state_change<'s, 'f>(&'s self, state: RTCIceGatheringState) -> Done<'f>
    where
        's: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            if state == RTCIceGatheringState::Complete {
                // Capacity 1: a second Complete is redundant; dropped.
                let _ = self.gathered.try_send(());
            }
        })
    }

    fn on_data_channel<'s, 'f>(&'s self, dc: Arc<dyn DataChannel>) -> Done<'f>
    where
        's: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            // Capacity 1: only one channel is expected; any other is dropped.
            let _ = self.incoming.try_send(dc);
        })
    }
}

/// One side being built.
struct Side {
    pc: Arc<dyn PeerConnection>,
    gathered: mpsc::Receiver<()>,
    incoming: mpsc::Receiver<Arc<dyn DataChannel>>,
}

impl Side {
    async fn build() -> anyhow::Result<Self> {
        let (gathered_tx, gathered) = mpsc::channel(1);
        let (incoming_tx, incoming) = mpsc::channel(1);
        let handler = Arc::new(Forwarder {
            gathered: gathered_tx,
            incoming: incoming_tx,
        });
        // As jobmesh's links (crates/transport/src/rtc.rs): 20 ms ICE checks,
        // 10 s to declare a silent peer failed.
        let settings = SettingEngineBuilder::default()
            .with_ice_connection_attempts(Some(Duration::from_millis(20)), None)
            .with_ice_timeouts(None, Some(Duration::from_secs(10)), None)
            .build();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(settings)
            .with_runtime(jobmesh_transport::runtime::BufferedRuntime::shared())
            .with_handler(handler)
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .with_data_channel_send_buffer_limit(SEND_BUFFER_LIMIT)
            .build()
            .await
            .context("building a peer connection")?;
        Ok(Self {
            pc: Arc::new(pc),
            gathered,
            incoming,
        })
    }

    /// Waits for ICE gathering, then returns the complete local SDP.
    async fn local_sdp(&mut self) -> anyhow::Result<String> {
        tokio::time::timeout(GATHER_TIMEOUT, self.gathered.recv())
            .await
            .context("ICE gathering did not complete")?
            .context("peer connection gone while gathering")?;
        Ok(self
            .pc
            .local_description()
            .await
            .context("no local description after gathering")?
            .sdp)
    }
}

/// Polls `dc` until it opens.
async fn wait_open(dc: &Arc<dyn DataChannel>) -> anyhow::Result<()> {
    loop {
        match dc.poll().await {
            Some(DataChannelEvent::OnOpen) => return Ok(()),
            Some(DataChannelEvent::OnClose) | None => bail!("data channel closed before open"),
            Some(_) => {}
        }
    }
}

/// Two connected peers: `a` offered and created the channel; `b`'s channel
/// is polled by the echo task for the pair's life.
struct Pair {
    a: Arc<dyn PeerConnection>,
    b: Arc<dyn PeerConnection>,
    dc: Arc<dyn DataChannel>,
    /// `b`'s reports: (bytes received before an end marker, when it came).
    reports: mpsc::Receiver<(usize, Instant)>,
    echo: JoinHandle<()>,
}

impl Pair {
    /// Builds both peer connections and opens the channel, within [`SETUP_TIMEOUT`].
    async fn connect() -> anyhow::Result<Self> {
        let mut a = Side::build().await.context("offerer")?;
        let mut b = match Side::build().await.context("answerer") {
            Ok(b) => b,
            Err(e) => {
                let _ = a.pc.close().await;
                return Err(e);
            }
        };
        let opened = tokio::time::timeout(SETUP_TIMEOUT, Self::open(&mut a, &mut b))
            .await
            .with_context(|| format!("channel not open within {SETUP_TIMEOUT:?}"))
            .and_then(|r| r);
        let (dc_a, dc_b) = match opened {
            Ok(dcs) => dcs,
            Err(e) => {
                let _ = a.pc.close().await;
                let _ = b.pc.close().await;
                return Err(e);
            }
        };
        let (report_tx, reports) = mpsc::channel(REPORTS);
        let echo = tokio::spawn(echo(dc_b, report_tx));
        Ok(Self {
            a: a.pc,
            b: b.pc,
            dc: dc_a,
            reports,
            echo,
        })
    }

    /// Offer/answer, then both channel ends open.
    async fn open(
        a: &mut Side,
        b: &mut Side,
    ) -> anyhow::Result<(Arc<dyn DataChannel>, Arc<dyn DataChannel>)> {
        let dc_a = a.pc.create_data_channel("bench", None).await?;
        let offer = a.pc.create_offer(None).await?;
        a.pc.set_local_description(offer).await?;
        let offer = a.local_sdp().await.context("offerer")?;
        b.pc.set_remote_description(RTCSessionDescription::offer(offer)?)
            .await?;
        let answer = b.pc.create_answer(None).await?;
        b.pc.set_local_description(answer).await?;
        let answer = b.local_sdp().await.context("answerer")?;
        a.pc.set_remote_description(RTCSessionDescription::answer(answer)?)
            .await?;
        let open_b = async {
            let dc_b = b
                .incoming
                .recv()
                .await
                .context("answerer's connection gone before its data channel arrived")?;
            wait_open(&dc_b).await.context("answerer's channel")?;
            anyhow::Ok(dc_b)
        };
        let (dc_b, ()) = tokio::try_join!(open_b, async {
            wait_open(&dc_a).await.context("offerer's channel")
        })?;
        Ok((dc_a, dc_b))
    }

    /// Sends one 64 B message and waits for its echo. The only poller of
    /// `a`'s channel while it runs.
    async fn round_trip(&self, ping: &[u8]) -> anyhow::Result<Duration> {
        let t = Instant::now();
        self.dc.send(BytesMut::from(ping)).await?;
        tokio::time::timeout(RTT_TIMEOUT, async {
            loop {
                match self.dc.poll().await {
                    Some(DataChannelEvent::OnMessage(m)) => {
                        ensure!(m.data.len() == PING, "echo of {} bytes", m.data.len());
                        return Ok(t.elapsed());
                    }
                    Some(DataChannelEvent::OnClose) | None => bail!("data channel closed"),
                    Some(_) => {}
                }
            }
        })
        .await
        .with_context(|| format!("no echo within {RTT_TIMEOUT:?}"))?
    }

    /// Warm-up, then the timed round trips in ms.
    async fn ping_pong(&self, plan: &Plan) -> anyhow::Result<Vec<f64>> {
        let ping = [0x5a_u8; PING];
        for _ in 0..plan.warmup {
            self.round_trip(&ping).await?;
        }
        let mut rtts = Vec::with_capacity(plan.timed);
        for _ in 0..plan.timed {
            rtts.push(ms(self.round_trip(&ping).await?));
        }
        Ok(rtts)
    }

    /// Sends `total` bytes as 64 KiB messages plus the end marker; returns
    /// the time until `b` had them all.
    async fn bulk(&mut self, total: usize) -> anyhow::Result<Duration> {
        let chunk = vec![0xa5_u8; CHUNK];
        let dc = &self.dc;
        let reports = &mut self.reports;
        let t = Instant::now();
        let send_all = async {
            let mut left = total;
            while left > 0 {
                let n = left.min(CHUNK);
                dc.send(BytesMut::from(&chunk[..n])).await?;
                left -= n;
            }
            dc.send(BytesMut::from(&[0_u8; END][..])).await?;
            anyhow::Ok(())
        };
        // `a`'s channel keeps being polled while it sends (its event queue
        // must not fill up); nothing but buffered-amount events is expected.
        let drain = async {
            loop {
                match dc.poll().await {
                    Some(DataChannelEvent::OnClose) | None => break,
                    Some(_) => {}
                }
            }
        };
        let reported = tokio::time::timeout(BULK_TIMEOUT, async {
            tokio::select! {
                sent = send_all => sent?,
                () = drain => bail!("data channel closed while sending"),
            }
            reports
                .recv()
                .await
                .context("the receiving side ended before the end marker")
        })
        .await
        .with_context(|| format!("bulk transfer not done within {BULK_TIMEOUT:?}"))??;
        let (got, at) = reported;
        ensure!(got == total, "received {got} of {total} bytes");
        Ok(at.saturating_duration_since(t))
    }

    /// Stops the echo task and closes both connections (which ends their
    /// driver tasks).
    async fn close(self) {
        self.echo.abort();
        let _ = self.dc.close().await;
        let _ = self.a.close().await;
        let _ = self.b.close().await;
        let _ = self.echo.await;
    }
}

/// `b`'s side: echoes 64 B messages, counts bulk bytes, and reports the
/// count and the time when an end marker arrives. The one poller of `b`'s
/// channel; ends when the channel does.
async fn echo(dc: Arc<dyn DataChannel>, reports: mpsc::Sender<(usize, Instant)>) {
    let mut bytes = 0;
    loop {
        let data = match dc.poll().await {
            Some(DataChannelEvent::OnMessage(m)) => m.data,
            Some(DataChannelEvent::OnClose) | None => return,
            Some(_) => continue,
        };
        match data.len() {
            PING => {
                if dc.send(data).await.is_err() {
                    return;
                }
            }
            END => {
                let at = Instant::now();
                // The measuring side waits for each report, so there is room.
                if reports.try_send((bytes, at)).is_err() {
                    return;
                }
                bytes = 0;
            }
            n => bytes += n,
        }
    }
}

// ---------------------------------------------------------------- TCP

/// The first byte a TCP client sends: what the connection is for.
const MODE_PING: u8 = b'p';
const MODE_BULK: u8 = b'b';

async fn tcp_figures(ctx: &Ctx, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(tcp_server(listener));
    let measured = measure_tcp(ctx, plan, addr).await;
    // The connections are dropped by now, so the handlers end on EOF; the
    // accept loop is aborted.
    server.abort();
    let _ = server.await;
    let (p50, p99, bulk) = measured?;
    Ok(vec![
        Figure::new(SCENARIO, "tcp 64 B ping-pong p50", "ms", p50),
        Figure::new(SCENARIO, "tcp 64 B ping-pong p99", "ms", p99),
        Figure::new(SCENARIO, "tcp bulk, 64 KiB writes", "MB/s", bulk),
    ])
}

async fn tcp_connect(addr: std::net::SocketAddr, mode: u8) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    s.write_all(&[mode]).await?;
    Ok(s)
}

async fn measure_tcp(
    ctx: &Ctx,
    plan: &Plan,
    addr: std::net::SocketAddr,
) -> anyhow::Result<Samples> {
    let mut ping_conn = tcp_connect(addr, MODE_PING).await?;
    let mut bulk_conn = tcp_connect(addr, MODE_BULK).await?;
    let (mut p50, mut p99, mut bulk) = (Vec::new(), Vec::new(), Vec::new());
    let ping = [0x5a_u8; PING];
    let mut pong = [0_u8; PING];
    let chunk = vec![0xa5_u8; CHUNK];
    for i in 0..ctx.repeats {
        let mut rtts = Vec::with_capacity(plan.timed);
        for n in 0..plan.warmup + plan.timed {
            let t = Instant::now();
            tokio::time::timeout(RTT_TIMEOUT, async {
                ping_conn.write_all(&ping).await?;
                ping_conn.read_exact(&mut pong).await?;
                anyhow::Ok(())
            })
            .await
            .with_context(|| format!("no TCP echo within {RTT_TIMEOUT:?}"))?
            .with_context(|| format!("TCP ping-pong, repeat {}", i + 1))?;
            if n >= plan.warmup {
                rtts.push(ms(t.elapsed()));
            }
        }
        let (a, b) = p50_p99(&mut rtts);
        p50.push(a);
        p99.push(b);

        // The receiver acknowledges the whole transfer with one byte; the
        // time is taken when the ack arrives (one loopback hop after the
        // last byte was read, a few µs).
        let t = Instant::now();
        tokio::time::timeout(BULK_TIMEOUT, async {
            bulk_conn
                .write_all(&(plan.bulk_bytes as u64).to_be_bytes())
                .await?;
            let mut left = plan.bulk_bytes;
            while left > 0 {
                let n = left.min(CHUNK);
                bulk_conn.write_all(&chunk[..n]).await?;
                left -= n;
            }
            let mut ack = [0_u8; 1];
            bulk_conn.read_exact(&mut ack).await?;
            anyhow::Ok(())
        })
        .await
        .with_context(|| format!("TCP bulk not done within {BULK_TIMEOUT:?}"))?
        .with_context(|| format!("TCP bulk, repeat {}", i + 1))?;
        bulk.push(mb_per_s(plan.bulk_bytes, t.elapsed()));
    }
    Ok((p50, p99, bulk))
}

/// Accepts connections and serves each in its own task (aborted together
/// with this one).
async fn tcp_server(listener: TcpListener) {
    let mut handlers = tokio::task::JoinSet::new();
    while let Ok((mut s, _)) = listener.accept().await {
        handlers.spawn(async move {
            // Errors end the connection; the measuring side reports them.
            let _ = serve_tcp(&mut s).await;
        });
    }
}

/// Echo mode: echoes 64 B messages until EOF. Bulk mode: per transfer, reads
/// an 8-byte length and that many bytes, then acknowledges with one byte.
async fn serve_tcp(s: &mut TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mode = s.read_u8().await?;
    if mode == MODE_PING {
        let mut buf = [0_u8; PING];
        loop {
            s.read_exact(&mut buf).await?;
            s.write_all(&buf).await?;
        }
    }
    let mut buf = vec![0_u8; CHUNK];
    loop {
        let mut left = s.read_u64().await?;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = s.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            left -= n as u64;
        }
        s.write_all(&[1]).await?;
    }
}
