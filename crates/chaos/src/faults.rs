//! The fault schedule: lanes of faults run side by side (processes, zombies and autoscaling,
//! brokers, the network), each drawing its next fault from a seeded generator until every kind it
//! owns reached its count. After each fault is healed, the lane measures recovery end to end: an
//! event published through the gateway must show in the customer API's profile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use omnistream_testkit::stack::Stack;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tokio::sync::Mutex;

use crate::cluster::{Cluster, DISK_NODE, NODES};
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
pub const LANES: [(&str, &[Kind]); 5] = [
    ("processes", &[Kind::ServiceKill, Kind::GatewayKill]),
    ("zombies", &[Kind::ServicePause]),
    ("autoscaler", &[Kind::Rebalance]),
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
    /// From the heal until an event published through the gateway showed in the API, or why it
    /// did not within the deadline (the last answer the probe got).
    pub recovery: Result<Duration, String>,
}

/// Everything the faults act on.
pub struct World {
    pub stack: Mutex<Stack>,
    pub cluster: Cluster,
    pub proxy: Proxy,
    /// The events topic, whose partitions' leaders the leader kills pick from.
    pub events_topic: String,
    pub client: reqwest::Client,
    /// Processes that exited by themselves (a fatal error), restarted by the supervisor.
    pub exits: Mutex<BTreeMap<&'static str, u32>>,
    /// Instances frozen by a pause: the autoscaler lane does not remove them meanwhile.
    pub paused: Mutex<BTreeSet<usize>>,
    /// Broker nodes a fault has stopped on purpose, with how many faults hold each: the
    /// supervisor leaves them down meanwhile. Its guard is also held while the supervisor decides
    /// on and starts a node, so a fault's hold never falls between the two.
    pub nodes_held: std::sync::Mutex<BTreeMap<u8, u32>>,
    /// Broker nodes started again after they stopped by themselves: how often, by node and the
    /// last error each logged.
    pub node_exits: Mutex<BTreeMap<String, u32>>,
}

/// Holds `node` out of the supervisor's restarts until dropped.
struct NodeHold<'a> {
    world: &'a World,
    node: u8,
}

impl<'a> NodeHold<'a> {
    fn new(world: &'a World, node: u8) -> Self {
        *world.nodes_held.lock().expect("the held nodes").entry(node).or_default() += 1;
        Self { world, node }
    }
}

impl Drop for NodeHold<'_> {
    fn drop(&mut self) {
        let mut held = self.world.nodes_held.lock().expect("the held nodes");
        if let Some(count) = held.get_mut(&self.node) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.node);
            }
        }
    }
}

/// The target of a fault this machine cannot inject (no loop device): not counted as unrecovered.
pub const UNAVAILABLE: &str = "unavailable";
/// The target of a fault whose injection failed: counted as a divergence.
pub const FAILED: &str = "failed";
const RECOVERY_DEADLINE: Duration = Duration::from_secs(300);
const PROCESSORS: [&str; 5] =
    ["profile-updater", "suppression", "channel-affinity", "loyalty-points", "journeys"];
/// The services with two instances from the start: a paused one's partitions move to the other.
pub const SCALED: [&str; 4] = ["profile-updater", "suppression", "channel-affinity", "loyalty-points"];

/// What a fault did: its target, how long it lasted, and when it was healed.
struct Injected {
    target: String,
    held: Duration,
    healed: Instant,
}

impl Injected {
    fn now(target: String, held: Duration) -> Self {
        Self { target, held, healed: Instant::now() }
    }
}

/// Runs a lane until each of its kinds was injected `count` times.
pub async fn lane(
    world: Arc<World>,
    name: &'static str,
    kinds: Vec<Kind>,
    count: usize,
    seed: u64,
    budget: Option<Instant>,
) -> Vec<Fault> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut faults: Vec<Fault> = Vec::new();
    let mut probes: Vec<tokio::task::JoinHandle<Fault>> = Vec::new();
    let mut slow_links: u32 = 0;
    loop {
        let due: Vec<Kind> = kinds
            .iter()
            .copied()
            .filter(|kind| faults.iter().filter(|f| f.kind == *kind).count() < count)
            .collect();
        let injected_so_far = |kind: Kind| faults.iter().filter(|f| f.kind == kind).count();
        let Some(&kind) = due.choose(&mut rng) else { break };
        if budget.is_some_and(|end| Instant::now() > end) {
            eprintln!("chaos: {name}: the time budget is spent");
            break;
        }
        if kind == Kind::DiskFull && !world.cluster.can_fill_disk() {
            eprintln!("chaos: {name}: no loop-mounted disk, no {kind}");
            faults.extend((0..count).map(|_| Fault {
                kind,
                target: UNAVAILABLE.into(),
                held: Duration::ZERO,
                recovery: Err("not injected".into()),
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
        let injected = injected.unwrap_or_else(|error| {
            eprintln!("chaos: {name}: {kind} failed: {error:#}");
            Injected::now(format!("{FAILED}: {error:#}"), Duration::ZERO)
        });
        // A broker fault has healed once every replica is back in sync (the next may begin then:
        // one node down at a time), and the pipeline when an event flows through it again. The
        // probe runs on while the lane goes on.
        let in_sync = match kind {
            Kind::LeaderKill | Kind::ControllerKill | Kind::DiskFull => wait_in_sync().await,
            _ => true,
        };
        let number = injected_so_far(kind) + 1;
        faults.push(Fault {
            kind,
            target: injected.target.clone(),
            held: injected.held,
            recovery: Err("probing".into()),
        });
        let probe_id = format!("probe-{name}-{kind}-{number}");
        let (done, recovered_or_not) = tokio::sync::oneshot::channel::<()>();
        probes.push(tokio::spawn({
            let world = world.clone();
            async move {
                let recovery = if in_sync {
                    probe(&world, &probe_id).await.map(|()| injected.healed.elapsed())
                } else {
                    Err("the replicas did not get in sync".into())
                };
                let _ = done.send(());
                eprintln!(
                    "chaos: {name}: {kind} #{number} on {}: held {:.1} s, recovered in {}",
                    injected.target,
                    injected.held.as_secs_f64(),
                    recovery
                        .as_ref()
                        .map_or_else(|why| format!("never ({why})"), |r| format!("{:.1} s", r.as_secs_f64()))
                );
                Fault { kind, target: injected.target, held: injected.held, recovery }
            }
        }));
        // The next fault once this one's probe came through, or after 15 s at most: faults overlap
        // only when recovery is slow.
        let _ = tokio::time::timeout(Duration::from_secs(15), recovered_or_not).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2_000))).await;
    }
    let mut faults = Vec::new();
    for probe in probes {
        faults.push(probe.await.expect("a probe"));
    }
    faults
}

/// `call` on the cluster off the async workers (it runs kafka.sh and waits for it).
async fn on_cluster<T: Send + 'static>(
    world: &Arc<World>,
    call: impl FnOnce(&Cluster) -> T + Send + 'static,
) -> anyhow::Result<T> {
    let world = world.clone();
    Ok(tokio::task::spawn_blocking(move || call(&world.cluster)).await?)
}

/// A running instance of one of `services` at random: (index, "name#index").
async fn instance_of(
    world: &World,
    services: &[&str],
    rng: &mut ChaCha8Rng,
) -> anyhow::Result<(usize, String)> {
    let stack = world.stack.lock().await;
    let candidates: Vec<usize> =
        stack.running().into_iter().filter(|&index| services.contains(&stack.name(index))).collect();
    let &index = candidates.choose(rng).context("no processor runs")?;
    Ok((index, format!("{}#{index}", stack.name(index))))
}

async fn service_kill(world: &Arc<World>, rng: &mut ChaCha8Rng) -> anyhow::Result<Injected> {
    let (index, target) = instance_of(world, &PROCESSORS, rng).await?;
    world.stack.lock().await.sigkill_and_restart_instance(index);
    Ok(Injected::now(target, Duration::ZERO))
}

async fn gateway_kill(world: &Arc<World>) -> anyhow::Result<Injected> {
    let mut stack = world.stack.lock().await;
    let index = *stack.instances("ingest-gateway").first().context("no gateway")?;
    stack.sigkill_and_restart_instance(index);
    Ok(Injected::now("ingest-gateway".into(), Duration::ZERO))
}

/// A zombie: frozen past its session timeout (6 s) and the rebalance that follows, so that the
/// other instance of its service took its partitions; woken, it must be fenced.
async fn service_pause(world: &Arc<World>, rng: &mut ChaCha8Rng) -> anyhow::Result<Injected> {
    let (index, target) = instance_of(world, &SCALED, rng).await?;
    let held = Duration::from_millis(rng.random_range(9_000..14_000));
    {
        let stack = world.stack.lock().await;
        stack.process(index).context("gone")?.pause();
        world.paused.lock().await.insert(index);
    }
    tokio::time::sleep(held).await;
    // Killed meanwhile by another lane: the new process runs anyway.
    if let Some(process) = world.stack.lock().await.process(index) {
        process.resume();
    }
    world.paused.lock().await.remove(&index);
    Ok(Injected::now(target, held))
}

/// A storm, as an autoscaler makes one: two instances added at once, and once they are ready two
/// instances (any) removed with SIGTERM, within a few seconds; at least two stay.
async fn rebalance(world: &Arc<World>, rng: &mut ChaCha8Rng) -> anyhow::Result<Injected> {
    let &name = SCALED.choose(rng).expect("services");
    let started = Instant::now();
    let added = {
        let mut stack = world.stack.lock().await;
        [stack.add_instance(name), stack.add_instance(name)]
    };
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    for index in added {
        while !world.stack.lock().await.is_ready(index).await {
            if Instant::now() > deadline {
                bail!("an added {name} instance was not ready within {RECOVERY_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(500..3_000))).await;
    let removed: Vec<_> = {
        let mut stack = world.stack.lock().await;
        let paused = world.paused.lock().await;
        let mut instances: Vec<usize> =
            stack.instances(name).into_iter().filter(|i| !paused.contains(i)).collect();
        let mut removed = Vec::new();
        while stack.instances(name).len() > 2 && !instances.is_empty() {
            let at = rng.random_range(0..instances.len());
            removed.extend(stack.detach_instance(instances.remove(at)));
        }
        removed
    };
    // A removed instance may exit 1: fenced while it stopped (its transaction outlived the
    // transaction timeout in a concurrent fault, and the coordinator bumped its epoch), which
    // docs/runtime.md's failure table prescribes; the checks hold it to losing nothing.
    let mut exits = Vec::new();
    for process in removed {
        let status = tokio::task::spawn_blocking(move || process.terminate(Duration::from_secs(60))).await?;
        exits.push(status.code().map_or_else(|| "a signal".to_owned(), |code| code.to_string()));
    }
    Ok(Injected::now(format!("{name}, +2 -2 (exits {})", exits.join(", ")), started.elapsed()))
}

async fn broker_kill(world: &Arc<World>, rng: &mut ChaCha8Rng, controller: bool) -> anyhow::Result<Injected> {
    // Right after an election (an earlier fault's) the cluster may not know the new leader yet:
    // asked again for up to 10 s.
    let partition =
        if controller { 0 } else { rng.random_range(0..omnistream_testkit::pipeline::PARTITIONS) };
    let mut known = None;
    for _ in 0..20 {
        let topic = world.events_topic.clone();
        known = match controller {
            true => on_cluster(world, Cluster::controller).await?,
            false => on_cluster(world, move |_| Cluster::leader_of(&topic, partition)).await?,
        };
        if known.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let node = match controller {
        true => known.context("no active controller known")?,
        false => known.with_context(|| format!("no leader of events partition {partition} known"))?,
    };
    let _hold = NodeHold::new(world, node);
    on_cluster(world, move |cluster| cluster.kill(node)).await??;
    let held = Duration::from_millis(rng.random_range(1_000..4_000));
    tokio::time::sleep(held).await;
    on_cluster(world, move |cluster| cluster.start_node(node)).await??;
    Ok(Injected::now(format!("node {node}"), held))
}

/// Node 3's disk filled. Its metadata log is on the same filesystem: Kafka halts the node when
/// its only log dir fails, so this ends as a crash with a full disk, and a restart once freed.
async fn disk_full(world: &Arc<World>) -> anyhow::Result<Injected> {
    let started = Instant::now();
    let _hold = NodeHold::new(world, DISK_NODE);
    on_cluster(world, Cluster::fill_disk).await??;
    while world.cluster.is_running(DISK_NODE) && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = started.elapsed();
    let halted = !world.cluster.is_running(DISK_NODE);
    world.cluster.free_disk();
    if !halted {
        on_cluster(world, |cluster| cluster.kill(DISK_NODE)).await??;
    }
    on_cluster(world, |cluster| cluster.start_node(DISK_NODE)).await??;
    let how = if halted { "halted" } else { "did not halt; killed" };
    Ok(Injected::now(format!("node {DISK_NODE} ({how})"), held))
}

async fn slow_link(world: &Arc<World>, rng: &mut ChaCha8Rng, blackhole: bool) -> anyhow::Result<Injected> {
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
    // Cut first: what the blackhole held must not reach the broker late.
    if blackhole {
        world.proxy.cut();
    }
    world.proxy.set(LinkMode::Clear);
    Ok(Injected::now(target, held))
}

/// Every partition of the cluster (internal topics, changelogs and the DLQ included) has its
/// three replicas in sync.
async fn wait_in_sync() -> bool {
    let synced = tokio::task::spawn_blocking(|| Cluster::wait_in_sync(RECOVERY_DEADLINE)).await;
    match synced {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => {
            eprintln!("chaos: {error:#}");
            false
        }
        Err(error) => {
            eprintln!("chaos: {error}");
            false
        }
    }
}

/// Publishes a probe, an order of a customer of its own (so probes land on every partition),
/// through the gateway (retried until accepted) and waits until the customer API shows it
/// applied by all four older services (each record's `version` counts the events it read, and
/// each of them reads an order). Not
/// within the deadline: the last answer it got, to tell where it stuck.
async fn probe(world: &World, customer: &str) -> Result<(), String> {
    let event = json!({
        "event_id": customer,
        "customer_id": customer,
        "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "channel": "web",
        "type": "order_placed",
        "properties": {"order_id": customer, "value_minor": 100, "currency": "EUR"}
    });
    let (gateway, api) = {
        let stack = world.stack.lock().await;
        (stack.gateway_port, stack.api_port)
    };
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    let mut last = String::from("nothing asked");
    let mut accepted = false;
    while !accepted && Instant::now() < deadline {
        let answer =
            world.client.post(format!("http://127.0.0.1:{gateway}/v1/events")).json(&event).send().await;
        match answer {
            Ok(response) if response.status().as_u16() == 200 => accepted = true,
            Ok(response) => {
                let status = response.status();
                last = format!("gateway {status}: {}", response.text().await.unwrap_or_default());
            }
            Err(error) => last = format!("gateway: {error}"),
        }
        if !accepted {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    while accepted && Instant::now() < deadline {
        let answer = world.client.get(format!("http://127.0.0.1:{api}/v1/customers/{customer}")).send().await;
        match answer {
            Ok(response) => match response.json::<serde_json::Value>().await {
                Ok(body)
                    if ["profile", "suppression", "channel_affinity", "loyalty"].iter().all(|section| {
                        body[section]["version"].as_i64().is_some_and(|version| version >= 1)
                    }) =>
                {
                    return Ok(());
                }
                Ok(body) => last = format!("accepted; the API: {body}"),
                Err(error) => last = format!("accepted; the API: {error}"),
            },
            Err(error) => last = format!("accepted; the API: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.chars().take(300).collect())
}

/// Broker node names in the count of exits.
const NODE_NAMES: [&str; NODES as usize] = ["kafka node 1", "kafka node 2", "kafka node 3"];
/// How long the supervisor leaves a node it started before it may start it again, doubled at
/// each start up to the cap, and back to the first once a node ran the cap past its wait: a node
/// that fails while starting is retried, as an orchestrator's restart backoff would.
const NODE_RESTART_BACKOFF: Duration = Duration::from_secs(10);
const NODE_RESTART_BACKOFF_CAP: Duration = Duration::from_secs(160);

/// When the supervisor last started a node, and how long it waits before the next start.
struct NodeRestarts {
    started: Instant,
    backoff: Duration,
}

/// Restarts every process and broker node that stopped by itself (a node outside a fault's hold),
/// as an orchestrator would, every second.
pub async fn supervise(world: Arc<World>, stop: tokio_util::sync::CancellationToken) {
    let mut restarts: BTreeMap<u8, NodeRestarts> = BTreeMap::new();
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
        for node in 1..=NODES {
            if let Some(last) = restarts.get(&node) {
                if last.started.elapsed() < last.backoff {
                    continue;
                }
                if last.started.elapsed() > last.backoff + NODE_RESTART_BACKOFF_CAP {
                    restarts.remove(&node);
                }
            }
            let decided = world.clone();
            let started = tokio::task::spawn_blocking(move || {
                let held = decided.nodes_held.lock().expect("the held nodes");
                if held.contains_key(&node) || decided.cluster.is_running(node) {
                    return None;
                }
                let reason = decided.cluster.last_error(node);
                Some((reason, decided.cluster.start_node(node)))
            })
            .await;
            let Ok(Some((reason, start))) = started else { continue };
            let reason = reason.unwrap_or_else(|| "no ERROR logged since it started (a signal?)".into());
            eprintln!("chaos: kafka node {node} stopped by itself ({reason}); starting it again");
            if let Err(error) = start {
                eprintln!("chaos: starting node {node}: {error:#}");
            }
            let backoff = restarts
                .get(&node)
                .map_or(NODE_RESTART_BACKOFF, |last| (last.backoff * 2).min(NODE_RESTART_BACKOFF_CAP));
            restarts.insert(node, NodeRestarts { started: Instant::now(), backoff });
            *world.node_exits.lock().await.entry(format!("node {node}: {reason}")).or_default() += 1;
            *world.exits.lock().await.entry(NODE_NAMES[usize::from(node - 1)]).or_default() += 1;
        }
    }
}
