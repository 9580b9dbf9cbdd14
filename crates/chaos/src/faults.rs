//! The fault schedule: lanes of faults run side by side (processes, zombies and autoscaling,
//! brokers, the network), each drawing its next fault from a seeded generator until every kind it
//! owns reached its count. After each fault is healed, the lane measures recovery end to end: an
//! event published through the gateway must show in the customer API's profile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use omnistream_testkit::stack::Stack;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tokio::sync::Mutex;

use crate::cluster::{Cluster, DISK_NODE};
use crate::proxy::{LinkMode, Proxy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    ServiceKill,
    GatewayKill,
    ServicePause,
    Rebalance,
    LeaderKill,
    ControllerKill,
    DiskFull,
    SlowLink,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::ServiceKill => "SIGKILL of a stream processor instance, restarted at once",
            Kind::GatewayKill => "SIGKILL of the ingest-gateway, restarted at once",
            Kind::ServicePause => {
                "SIGSTOP of a stream processor instance past its session timeout (6 s), then SIGCONT"
            }
            Kind::Rebalance => "an instance added to a service, then one of its instances removed (SIGTERM)",
            Kind::LeaderKill => "SIGKILL of the leader broker of an events partition, restarted",
            Kind::ControllerKill => "SIGKILL of the active KRaft controller's node, restarted",
            Kind::DiskFull => {
                "node 3's filesystem filled to the last byte, then freed (and the node restarted)"
            }
            Kind::SlowLink => {
                "the services' link to every broker delayed (0.3-1.5 s per chunk) or blackholed past the transaction timeout, then cut"
            }
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Kind::ServiceKill => "service_kill",
            Kind::GatewayKill => "gateway_kill",
            Kind::ServicePause => "service_pause",
            Kind::Rebalance => "rebalance",
            Kind::LeaderKill => "leader_kill",
            Kind::ControllerKill => "controller_kill",
            Kind::DiskFull => "disk_full",
            Kind::SlowLink => "slow_link",
        };
        f.write_str(name)
    }
}

/// The lanes: kinds in one lane never overlap (e.g. one broker down at a time: with
/// `min.insync.replicas=2` a second would stop writes, which is an outage, not a fault to survive).
pub const LANES: [(&str, &[Kind]); 4] = [
    ("processes", &[Kind::ServiceKill, Kind::GatewayKill]),
    ("zombies", &[Kind::ServicePause, Kind::Rebalance]),
    ("brokers", &[Kind::LeaderKill, Kind::ControllerKill, Kind::DiskFull]),
    ("network", &[Kind::SlowLink]),
];

/// One injected fault.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: Kind,
    pub target: String,
    /// How long the fault lasted before it was healed.
    pub held: Duration,
    /// From the heal until an event published through the gateway showed in the API (`None`:
    /// not within the deadline).
    pub recovery: Option<Duration>,
}

/// Everything the faults act on.
pub struct World {
    pub stack: Mutex<Stack>,
    pub cluster: Cluster,
    pub proxy: Proxy,
    /// Topics whose replicas must be in sync again after a broker fault.
    pub topics: Vec<String>,
    pub client: reqwest::Client,
    /// Processes that exited by themselves (a fatal error), restarted by the supervisor.
    pub exits: Mutex<BTreeMap<&'static str, u32>>,
}

/// The target of a fault this machine cannot inject (no loop device): not counted as unrecovered.
pub const UNAVAILABLE: &str = "unavailable";
const RECOVERY_DEADLINE: Duration = Duration::from_secs(300);
const PROCESSORS: [&str; 5] =
    ["profile-updater", "suppression", "channel-affinity", "loyalty-points", "journeys"];

/// Runs a lane until each of its kinds was injected `count` times.
pub async fn lane(
    world: Arc<World>,
    name: &'static str,
    kinds: Vec<Kind>,
    count: usize,
    seed: u64,
) -> Vec<Fault> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut faults: Vec<Fault> = Vec::new();
    let mut probes = 0;
    let mut slow_links: u32 = 0;
    loop {
        let due: Vec<Kind> = kinds
            .iter()
            .copied()
            .filter(|kind| faults.iter().filter(|f| f.kind == *kind).count() < count)
            .collect();
        let Some(&kind) = due.choose(&mut rng) else { break };
        if kind == Kind::DiskFull && !world.cluster.can_fill_disk() {
            eprintln!("chaos: {name}: no loop-mounted disk, no {kind}");
            faults.extend((0..count).map(|_| Fault {
                kind,
                target: UNAVAILABLE.into(),
                held: Duration::ZERO,
                recovery: None,
            }));
            continue;
        }
        let injected = match kind {
            Kind::ServiceKill => service_kill(&world, &mut rng).await,
            Kind::GatewayKill => gateway_kill(&world).await,
            Kind::ServicePause => service_pause(&world, &mut rng).await,
            Kind::Rebalance => rebalance(&world, &mut rng).await,
            Kind::LeaderKill => broker_kill(&world, &mut rng, false).await,
            Kind::ControllerKill => broker_kill(&world, &mut rng, true).await,
            Kind::DiskFull => disk_full(&world).await,
            Kind::SlowLink => {
                slow_links += 1;
                slow_link(&world, &mut rng, slow_links.is_multiple_of(2)).await
            }
        };
        let (target, held) = match injected {
            Ok(done) => done,
            Err(error) => {
                eprintln!("chaos: {name}: {kind} failed: {error:#}");
                (format!("failed: {error:#}"), Duration::ZERO)
            }
        };
        let healed = Instant::now();
        let recovery = probe(&world, name, &mut probes).await.then(|| healed.elapsed());
        eprintln!(
            "chaos: {name}: {kind} #{} on {target}: held {:.1} s, recovered in {}",
            faults.iter().filter(|f| f.kind == kind).count() + 1,
            held.as_secs_f64(),
            recovery.map_or("never".to_owned(), |r| format!("{:.1} s", r.as_secs_f64()))
        );
        faults.push(Fault { kind, target, held, recovery });
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1_500))).await;
    }
    faults
}

/// A running stream processor instance at random: (index, "name#index").
async fn processor_instance(world: &World, rng: &mut ChaCha8Rng) -> anyhow::Result<(usize, String)> {
    let stack = world.stack.lock().await;
    let candidates: Vec<usize> =
        stack.running().into_iter().filter(|&index| PROCESSORS.contains(&stack.name(index))).collect();
    let &index = candidates.choose(rng).context("no processor runs")?;
    Ok((index, format!("{}#{index}", stack.name(index))))
}

async fn service_kill(world: &World, rng: &mut ChaCha8Rng) -> anyhow::Result<(String, Duration)> {
    let (index, target) = processor_instance(world, rng).await?;
    world.stack.lock().await.sigkill_and_restart_instance(index);
    Ok((target, Duration::ZERO))
}

async fn gateway_kill(world: &World) -> anyhow::Result<(String, Duration)> {
    let mut stack = world.stack.lock().await;
    let index = *stack.instances("ingest-gateway").first().context("no gateway")?;
    stack.sigkill_and_restart_instance(index);
    Ok(("ingest-gateway".into(), Duration::ZERO))
}

async fn service_pause(world: &World, rng: &mut ChaCha8Rng) -> anyhow::Result<(String, Duration)> {
    let (index, target) = processor_instance(world, rng).await?;
    let held = Duration::from_millis(rng.random_range(7_000..12_000));
    world.stack.lock().await.process(index).context("gone")?.pause();
    tokio::time::sleep(held).await;
    // Killed meanwhile by another lane: the new process runs anyway.
    if let Some(process) = world.stack.lock().await.process(index) {
        process.resume();
    }
    Ok((target, held))
}

async fn rebalance(world: &World, rng: &mut ChaCha8Rng) -> anyhow::Result<(String, Duration)> {
    let &name = PROCESSORS.choose(rng).expect("processors");
    let started = Instant::now();
    let added = world.stack.lock().await.add_instance(name);
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    while !world.stack.lock().await.is_ready(added).await {
        if Instant::now() > deadline {
            bail!("the added {name} instance was not ready within {RECOVERY_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..5_000))).await;
    let removed = {
        let mut stack = world.stack.lock().await;
        let instances = stack.instances(name);
        let &remove = instances.choose(rng).expect("the added one at least");
        (instances.len() > 2).then(|| stack.detach_instance(remove)).flatten()
    };
    if let Some(process) = removed {
        let status = tokio::task::spawn_blocking(move || process.terminate(Duration::from_secs(60))).await?;
        if !status.success() {
            bail!("a removed {name} instance exited with {status} after SIGTERM");
        }
    }
    Ok((format!("{name}#{added}"), started.elapsed()))
}

async fn broker_kill(
    world: &World,
    rng: &mut ChaCha8Rng,
    controller: bool,
) -> anyhow::Result<(String, Duration)> {
    let node = if controller {
        world.cluster.controller().context("no active controller known")?
    } else {
        let topic = world.topics.first().context("no topic")?.clone();
        let partition = rng.random_range(0..omnistream_testkit::pipeline::PARTITIONS);
        Cluster::leader_of(&topic, partition).context("no leader")?
    };
    world.cluster.kill(node)?;
    let held = Duration::from_millis(rng.random_range(1_000..4_000));
    tokio::time::sleep(held).await;
    world.cluster.start_node(node)?;
    wait_in_sync(world).await?;
    Ok((format!("node {node}"), held))
}

async fn disk_full(world: &World) -> anyhow::Result<(String, Duration)> {
    let started = Instant::now();
    world.cluster.fill_disk()?;
    // Filled, the broker's next write fails and it halts (its only log dir is offline).
    while world.cluster.is_running(DISK_NODE) && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = started.elapsed();
    let halted = !world.cluster.is_running(DISK_NODE);
    world.cluster.free_disk();
    if !halted {
        world.cluster.kill(DISK_NODE)?;
    }
    world.cluster.start_node(DISK_NODE)?;
    wait_in_sync(world).await?;
    let how = if halted { "halted" } else { "did not halt; killed" };
    Ok((format!("node {DISK_NODE} ({how})"), held))
}

async fn slow_link(
    world: &World,
    rng: &mut ChaCha8Rng,
    blackhole: bool,
) -> anyhow::Result<(String, Duration)> {
    let (mode, held, target) = if blackhole {
        (LinkMode::Blackhole, rng.random_range(11_000..15_000), "blackhole, then cut".to_owned())
    } else {
        let delay = rng.random_range(300..1_500);
        (
            LinkMode::Delay(Duration::from_millis(delay)),
            rng.random_range(8_000..15_000),
            format!("delay {delay} ms"),
        )
    };
    let held = Duration::from_millis(held);
    world.proxy.set(mode);
    tokio::time::sleep(held).await;
    world.proxy.set(LinkMode::Clear);
    if blackhole {
        world.proxy.cut();
    }
    Ok((target, held))
}

async fn wait_in_sync(world: &World) -> anyhow::Result<()> {
    let topics = world.topics.clone();
    tokio::task::spawn_blocking(move || Cluster::wait_in_sync(&topics, RECOVERY_DEADLINE)).await??;
    Ok(())
}

/// Publishes the lane's next probe event through the gateway (retried until accepted) and waits
/// until the customer API's profile of the probe customer counts it.
async fn probe(world: &World, lane: &str, probes: &mut i64) -> bool {
    *probes += 1;
    let customer = format!("probe-{lane}");
    let event = json!({
        "event_id": format!("probe-{lane}-{probes}"),
        "customer_id": customer,
        "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "channel": "web",
        "type": "page_viewed",
        "properties": {"url": "/probe"}
    });
    let (gateway, api) = {
        let stack = world.stack.lock().await;
        (stack.gateway_port, stack.api_port)
    };
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    loop {
        let answer =
            world.client.post(format!("http://127.0.0.1:{gateway}/v1/events")).json(&event).send().await;
        if answer.is_ok_and(|response| response.status().as_u16() == 200) {
            break;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let answer = world.client.get(format!("http://127.0.0.1:{api}/v1/customers/{customer}")).send().await;
        if let Ok(response) = answer
            && let Ok(body) = response.json::<serde_json::Value>().await
            && body["profile"]["version"].as_i64().is_some_and(|version| version >= *probes)
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Restarts every process that exited by itself, as an orchestrator would, every second.
pub async fn supervise(world: Arc<World>, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
        let restarted = world.stack.lock().await.restart_exited();
        if !restarted.is_empty() {
            let mut exits = world.exits.lock().await;
            for name in restarted {
                eprintln!("chaos: {name} exited by itself; restarted");
                *exits.entry(name).or_default() += 1;
            }
        }
    }
}
