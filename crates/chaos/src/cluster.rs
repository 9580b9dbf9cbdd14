//! The 3-node cluster of `deploy/local/kafka.sh` (BROKERS=3) in a home of its own, node 3's data
//! on a small loop-mounted filesystem so that its disk can be filled.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Node 3's filesystem: large enough for the run, small enough to fill at once.
const DISK_BYTES: u64 = 2 << 30;
pub const NODES: u8 = 3;
/// The node whose data lives on the loop-mounted filesystem.
pub const DISK_NODE: u8 = 3;

pub struct Cluster {
    home: PathBuf,
    image: PathBuf,
    /// Node 3's data directory when it is a mounted filesystem (root and loop devices needed).
    disk: Option<PathBuf>,
}

impl Cluster {
    /// A fresh cluster under `work` (what an earlier run left there is deleted), started.
    pub fn start(work: &Path) -> anyhow::Result<Self> {
        let home = work.join("cluster");
        let mut cluster = Self { image: work.join("node-3-disk.img"), home, disk: None };
        // What an interrupted run left: nodes first (they hold files on the disk), then the disk.
        cluster.kafka(&["down"])?;
        cluster.unmount();
        // The BROKERS=3 dev cluster listens on the same ports: `up` would take it for this one.
        if let Some(port) = (1..=NODES).map(|node| 19090 + u16::from(node)).find(|port| {
            std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], *port).into(), Duration::from_secs(1))
                .is_ok()
        }) {
            bail!(
                "something listens on 127.0.0.1:{port}: stop the BROKERS=3 cluster first (make kafka-down BROKERS=3)"
            );
        }
        cluster.kafka(&["reset"])?;
        let data = cluster.home.join(format!("node-{DISK_NODE}/data"));
        std::fs::create_dir_all(&data)?;
        match cluster.mount(&data) {
            Ok(()) => cluster.disk = Some(data),
            Err(error) => eprintln!("chaos: no full-disk faults: {error:#}"),
        }
        cluster.kafka(&["up"])?;
        Ok(cluster)
    }

    pub fn bootstrap() -> String {
        (1..=NODES).map(|node| format!("127.0.0.1:{}", 19090 + u16::from(node))).collect::<Vec<_>>().join(",")
    }

    /// (proxy port, FAULTY listener port) of every node.
    pub fn faulty_routes() -> Vec<(u16, u16)> {
        (1..=NODES).map(|node| (19390 + u16::from(node), 19290 + u16::from(node))).collect()
    }

    pub fn faulty_bootstrap() -> String {
        Self::faulty_routes()
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn can_fill_disk(&self) -> bool {
        self.disk.is_some()
    }

    fn mount(&self, data: &Path) -> anyhow::Result<()> {
        let run = |program: &str, args: &[&str]| -> anyhow::Result<()> {
            let output =
                Command::new(program).args(args).output().with_context(|| format!("run {program}"))?;
            if !output.status.success() {
                bail!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
            }
            Ok(())
        };
        let image = self.image.to_string_lossy().into_owned();
        std::fs::remove_file(&self.image).ok();
        run("truncate", &["-s", &DISK_BYTES.to_string(), &image])?;
        // No blocks reserved for root: the broker runs as root and would otherwise write on.
        run("mkfs.ext4", &["-q", "-F", "-m", "0", &image])?;
        run("mount", &["-o", "loop", &image, &data.to_string_lossy()])?;
        // Kafka takes every directory in a log dir for a partition's and fails on lost+found.
        std::fs::remove_dir(data.join("lost+found")).context("remove lost+found")
    }

    /// Unmounts node 3's disk if mounted: a node just stopped may hold its files a moment longer,
    /// so it tries for 5 s, then detaches it lazily.
    fn unmount(&self) {
        let data = self.home.join(format!("node-{DISK_NODE}/data"));
        let mounted = || {
            std::fs::read_to_string("/proc/mounts")
                .is_ok_and(|mounts| mounts.lines().any(|line| line.split(' ').nth(1) == data.to_str()))
        };
        for _ in 0..10 {
            if !mounted() {
                return;
            }
            let _ = Command::new("umount").arg(&data).output();
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = Command::new("umount").arg("-l").arg(&data).output();
    }

    /// `kafka.sh <args>` for this cluster; its output on failure.
    pub fn kafka(&self, args: &[&str]) -> anyhow::Result<String> {
        let script = omnistream_testkit::repo_root().join("deploy/local/kafka.sh");
        let output = Command::new("bash")
            .arg(script)
            .args(args)
            .env("BROKERS", "3")
            .env("OMNISTREAM_KAFKA_CLUSTER_HOME", &self.home)
            .stdin(std::process::Stdio::null())
            .output()?;
        if !output.status.success() {
            bail!("kafka.sh {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    pub fn kill(&self, node: u8) -> anyhow::Result<()> {
        self.kafka(&["kill-node", &node.to_string()]).map(drop)
    }

    pub fn start_node(&self, node: u8) -> anyhow::Result<()> {
        self.kafka(&["start-node", &node.to_string()]).map(drop)
    }

    pub fn is_running(&self, node: u8) -> bool {
        let pid =
            std::fs::read_to_string(self.home.join(format!("node-{node}/kafka.pid"))).unwrap_or_default();
        let pid = pid.trim();
        !pid.is_empty() && Path::new(&format!("/proc/{pid}")).exists() && {
            // A zombie (killed, not yet reaped by anyone) counts as gone.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        }
    }

    /// The last error node `node` logged since its latest start (see [`last_error_of`]).
    pub fn last_error(&self, node: u8) -> Option<String> {
        let log = std::fs::read(self.home.join(format!("node-{node}/kafka.log"))).ok()?;
        let log = String::from_utf8_lossy(&log);
        let latest = log.rfind(&format!("=== node {node} starting")).unwrap_or(0);
        last_error_of(&log[latest..])
    }

    /// The active controller's node id.
    pub fn controller(&self) -> Option<u8> {
        self.kafka(&["controller"]).ok()?.parse().ok()
    }

    /// Fills node 3's filesystem to the last byte.
    pub fn fill_disk(&self) -> anyhow::Result<()> {
        let data = self.disk.as_ref().context("no loop-mounted disk")?;
        let filler = data.join("filler");
        let available = Command::new("df").args(["--output=avail", "-B1"]).arg(data).output()?;
        let available: u64 = String::from_utf8_lossy(&available.stdout)
            .lines()
            .nth(1)
            .and_then(|line| line.trim().parse().ok())
            .context("df's answer")?;
        // fallocate takes what is free without writing it; dd then writes the last blocks.
        let _ = Command::new("fallocate")
            .args(["-l", &available.saturating_sub(1 << 20).to_string()])
            .arg(&filler)
            .output()?;
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k", "status=none"])
            .arg(format!("of={}", data.join("filler-tail").display()))
            .output()?;
        Ok(())
    }

    pub fn free_disk(&self) {
        if let Some(data) = &self.disk {
            std::fs::remove_file(data.join("filler")).ok();
            std::fs::remove_file(data.join("filler-tail")).ok();
        }
    }

    /// Waits until every partition of the cluster has all three replicas in sync; how long it took.
    pub fn wait_in_sync(deadline: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", Self::bootstrap()).create()?;
        loop {
            let synced = consumer.fetch_metadata(None, Duration::from_secs(5)).is_ok_and(|metadata| {
                metadata.topics().iter().all(|topic| {
                    topic.partitions().iter().all(|p| p.isr().len() == usize::from(NODES) && p.leader() >= 0)
                })
            });
            if synced {
                return Ok(started.elapsed());
            }
            if started.elapsed() > deadline {
                bail!("replicas not in sync within {deadline:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The leader node of partition `partition` of `topic`.
    pub fn leader_of(topic: &str, partition: i32) -> Option<u8> {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", Self::bootstrap()).create().ok()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
        let leader = metadata.topics().first()?.partitions().iter().find(|p| p.id() == partition)?.leader();
        u8::try_from(leader).ok().filter(|node| (1..=NODES).contains(node))
    }
}

/// Kafka's own reason for stopping when it logged one (a `FATAL` line, `Exiting Kafka ...`,
/// `Shutdown broker because ...`), else the last `ERROR` line: without its timestamp, and with
/// the exception message on the line after it if there is one. A node killed by a signal logs
/// no reason, so its last `ERROR` may be a routine one (a replica fetcher's, say).
fn last_error_of(log: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().collect();
    let stopping = |line: &&str| {
        line.contains("] FATAL ")
            || (line.contains("] ERROR ")
                && (line.contains("Exiting Kafka") || line.contains("Shutdown broker because")))
    };
    let at = lines
        .iter()
        .rposition(stopping)
        .or_else(|| lines.iter().rposition(|line| line.contains("] ERROR ")))?;
    let message = lines[at].split_once("] ").map_or(lines[at], |(_, message)| message);
    let cause = lines.get(at + 1).filter(|line| !line.starts_with('[') && !line.starts_with('\t'));
    let reason = match cause {
        Some(cause) => format!("{message}: {cause}"),
        None => message.to_owned(),
    };
    Some(reason.chars().take(400).collect())
}

/// Stops every node and unmounts the disk, also when the harness fails.
impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(error) = self.kafka(&["down"]) {
            eprintln!("chaos: {error:#}");
        }
        self.unmount();
        std::fs::remove_file(&self.image).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::last_error_of;

    #[test]
    fn a_nodes_reason_is_kafkas_own_for_stopping_else_its_last_error_with_the_exception_after_it() {
        let log = "[2026-12-08 02:21:44,518] ERROR [ReplicaFetcher replicaId=3] Error while processing\n\
                   [2026-12-08 02:26:14,238] INFO [BrokerServer id=3] shut down completed\n\
                   [2026-12-08 02:26:14,244] ERROR Exiting Kafka due to fatal exception during startup. (kafka.Kafka$)\n\
                   java.lang.RuntimeException: Received a fatal error while waiting for the controller\n\
                   \tat org.apache.kafka.server.util.FutureUtils.waitWithLogging(FutureUtils.java:72)\n";
        assert_eq!(
            last_error_of(log).as_deref(),
            Some(
                "ERROR Exiting Kafka due to fatal exception during startup. (kafka.Kafka$): \
                 java.lang.RuntimeException: Received a fatal error while waiting for the controller"
            )
        );
        assert_eq!(
            last_error_of("[t] ERROR Shutdown broker because all log dirs have failed\n[t] INFO bye\n")
                .as_deref(),
            Some("ERROR Shutdown broker because all log dirs have failed")
        );
        assert_eq!(
            last_error_of(
                "[t] ERROR Shutdown broker because all log dirs in /data have failed (kafka.log.LogManager)\n\
                 [t] ERROR [ReplicaFetcher replicaId=3, leaderId=1] Error while processing data\n"
            )
            .as_deref(),
            Some("ERROR Shutdown broker because all log dirs in /data have failed (kafka.log.LogManager)")
        );
        assert_eq!(last_error_of("[t] INFO started\n"), None);
    }
}
