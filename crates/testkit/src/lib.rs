//! Integration-test helpers: a real Kafka (the local one, started on demand, or the cluster
//! `KAFKA_BOOTSTRAP_SERVERS` names), unique topics per test, produce and consume helpers, child
//! service processes, and (in [`pipeline`]) the exactly-once comparison with a pure fold.

pub mod browser;
pub mod pipeline;
pub mod replay;
pub mod stack;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use omnistream_runtime::admin::{TopicRequest, create_topics};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// The repository root (for scripts under `deploy/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// Runs schemathesis (PyPI, `make py-deps` installs it in target/py) against the OpenAPI document
/// at `document_url` with every check, the settings file `config` and `args`; fails the test
/// with schemathesis's report when an answer does not match the document.
pub fn schemathesis(config: &std::path::Path, document_url: &str, args: &[&str]) {
    let output = Command::new(repo_root().join("target/py/bin/st"))
        .arg("--config-file")
        .arg(config)
        .args(["run", document_url, "--checks", "all", "--seed", "1"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("schemathesis: {e} (`make py-deps` installs it in target/py)"));
    assert!(
        output.status.success(),
        "schemathesis found answers that do not match the document:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// Bootstrap servers of a running broker: `KAFKA_BOOTSTRAP_SERVERS`, or the local broker, which
/// this starts (once per process) with `deploy/local/kafka.sh up` if it is not running.
pub fn bootstrap_servers() -> &'static str {
    static SERVERS: OnceLock<String> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let script = repo_root().join("deploy/local/kafka.sh");
        let status = Command::new("bash").arg(&script).arg("up").status().expect("run kafka.sh");
        assert!(status.success(), "{} up failed", script.display());
        std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
    })
}

/// How many data batches of each codec (`zstd`, `lz4`, ...) the local broker's log of `topic`
/// holds, as Kafka's own DumpLogSegments reads them (`deploy/local/kafka.sh codecs`): what its
/// producers compressed with. `None` against a cluster of `KAFKA_BOOTSTRAP_SERVERS`, whose logs
/// are not here.
pub fn batch_codecs(topic: &str) -> Option<std::collections::BTreeMap<String, usize>> {
    if std::env::var_os("KAFKA_BOOTSTRAP_SERVERS").is_some() {
        return None;
    }
    let script = repo_root().join("deploy/local/kafka.sh");
    let output = Command::new("bash").arg(&script).args(["codecs", topic]).output().expect("run kafka.sh");
    assert!(output.status.success(), "kafka.sh codecs {topic}: {}", String::from_utf8_lossy(&output.stderr));
    let counts = String::from_utf8(output.stdout).expect("text");
    Some(
        counts
            .lines()
            .filter_map(|line| {
                let (count, codec) = line.trim().split_once(' ')?;
                Some((codec.to_owned(), count.parse().expect("a count")))
            })
            .collect(),
    )
}

/// The test schema registry's Confluent-compatible API (`deploy/local/registry.sh up`, started on
/// first use), or `SCHEMA_REGISTRY_URL`'s.
pub fn registry_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let script = repo_root().join("deploy/local/registry.sh");
        let status = Command::new("bash").arg(&script).arg("up").status().expect("run registry.sh");
        assert!(status.success(), "{} up failed", script.display());
        let url = Command::new("bash").arg(&script).arg("url").output().expect("run registry.sh url");
        String::from_utf8(url.stdout).expect("a URL").trim().to_owned()
    })
}

/// The test trace backend (`deploy/local/jaeger.sh up`, built and started on first use): its
/// OTLP endpoint and its query API.
pub fn jaeger_urls() -> &'static (String, String) {
    static URLS: OnceLock<(String, String)> = OnceLock::new();
    URLS.get_or_init(|| {
        let script = repo_root().join("deploy/local/jaeger.sh");
        let status = Command::new("bash").arg(&script).arg("up").status().expect("run jaeger.sh");
        assert!(status.success(), "{} up failed", script.display());
        let url = |which: &str| {
            let output = Command::new("bash").arg(&script).arg(which).output().expect("run jaeger.sh");
            String::from_utf8(output.stdout).expect("a URL").trim().to_owned()
        };
        (url("url"), url("query-url"))
    })
}

/// A client configuration pointing at the test broker.
pub fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap_servers());
    config
}

/// A topic name no other test (or earlier run) uses.
pub fn unique_topic(label: &str) -> String {
    format!("test.{label}.{}", uuid::Uuid::new_v4().simple())
}

/// Creates the topics of a test.
pub async fn create_test_topics(requests: &[TopicRequest]) {
    create_topics_and_wait(client_config(), requests).await;
}

/// Creates topics with the client `config` (its bootstrap servers) and returns once the broker's
/// metadata has each of them with its partitions.
pub async fn create_topics_and_wait(config: ClientConfig, requests: &[TopicRequest]) {
    create_topics(&config, requests).await.expect("create test topics");
    // The controller answers before the broker's metadata has every new topic: a process started
    // at once could find one missing and stop (as it should; CI failed that way).
    let expected: Vec<(String, usize)> = requests
        .iter()
        .map(|request| (request.name.clone(), usize::try_from(request.partitions).unwrap_or(0)))
        .collect();
    tokio::task::spawn_blocking(move || {
        let reader: BaseConsumer = config.create().expect("metadata consumer");
        wait_until("the new topics are in the broker's metadata", Duration::from_secs(30), || {
            expected.iter().all(|(name, partitions)| {
                reader.fetch_metadata(Some(name), Duration::from_secs(5)).ok().is_some_and(|metadata| {
                    metadata.topics().first().is_some_and(|topic| {
                        topic.error().is_none() && topic.partitions().len() == *partitions
                    })
                })
            })
        });
    })
    .await
    .expect("the metadata wait");
}

/// Deletes every topic whose name starts with `prefix` and returns how many there were: unique
/// topics otherwise pile up on a long-lived dev broker (a full `make bench` writes gigabytes).
pub async fn delete_topics_with_prefix(prefix: &str) -> usize {
    let metadata_reader: BaseConsumer = client_config().create().expect("metadata consumer");
    let metadata = metadata_reader.fetch_metadata(None, Duration::from_secs(30)).expect("topic metadata");
    let names: Vec<&str> =
        metadata.topics().iter().map(|topic| topic.name()).filter(|name| name.starts_with(prefix)).collect();
    if names.is_empty() {
        return 0;
    }
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
    let results = admin.delete_topics(&names, &options).await.expect("delete topics");
    results.iter().filter(|result| result.is_ok()).count()
}

/// Creates one fresh delete-policy topic and returns its name.
pub async fn fresh_topic(label: &str, partitions: i32) -> String {
    let name = unique_topic(label);
    create_test_topics(&[TopicRequest::plain(&name, partitions, 1)]).await;
    name
}

/// An idempotent producer with the pipeline's partitioner.
pub fn producer() -> FutureProducer {
    client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produces every (key, value) and waits until Kafka acknowledged all of them.
pub async fn produce_all(topic: &str, records: impl IntoIterator<Item = (String, Vec<u8>)>) {
    produce_with(&producer(), topic, records).await;
}

/// Produces every (key, value) with `producer` and waits until Kafka acknowledged all of them.
pub async fn produce_with(
    producer: &FutureProducer,
    topic: &str,
    records: impl IntoIterator<Item = (String, Vec<u8>)>,
) {
    let mut deliveries = Vec::new();
    for (key, value) in records {
        let delivery = producer
            .send_result(FutureRecord::to(topic).key(&key).payload(&value))
            .map_err(|(e, _)| e)
            .expect("enqueue");
        deliveries.push(delivery);
        if deliveries.len() >= 10_000 {
            for delivery in deliveries.drain(..) {
                delivery.await.expect("delivery future").expect("acknowledged");
            }
        }
    }
    for delivery in deliveries {
        delivery.await.expect("delivery future").expect("acknowledged");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// The partitions of `topic`, waiting for a just-created topic to show them in the metadata (a
/// busy fresh broker can answer without them for a moment, and assigning none reads nothing).
fn partition_count(consumer: &BaseConsumer, topic: &str) -> usize {
    let started = Instant::now();
    loop {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
        let partitions = metadata.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
        if partitions > 0 || started.elapsed() > Duration::from_secs(30) {
            return partitions;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A read_committed consumer of every partition of `topic`, from the beginning, outside any group.
fn committed_consumer(topic: &str) -> BaseConsumer {
    committed_consumer_reporting_eof(topic, false)
}

fn committed_consumer_reporting_eof(topic: &str, eof: bool) -> BaseConsumer {
    let consumer: BaseConsumer = client_config()
        .set("group.id", format!("test-reader-{}", uuid::Uuid::new_v4()))
        .set("enable.partition.eof", eof.to_string())
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "50")
        .create()
        .expect("consumer");
    let partitions = partition_count(&consumer, topic);
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let partition = i32::try_from(partition).expect("partition");
        assignment.add_partition_offset(topic, partition, Offset::Beginning).expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    consumer
}

/// Reads a topic from the beginning with a read_committed consumer until `expected` records arrived
/// or `deadline` passed; returns what it read, in partition then offset order.
pub fn consume_committed(topic: &str, expected: usize, deadline: Duration) -> Vec<OwnedMessage> {
    let consumer = committed_consumer(topic);
    let started = Instant::now();
    let mut messages = Vec::new();
    while messages.len() < expected && started.elapsed() < deadline {
        if let Some(result) = consumer.poll(Duration::from_millis(200)) {
            messages.push(result.expect("consume").detach());
        }
    }
    messages.sort_by_key(|m| (m.partition(), m.offset()));
    messages
}

/// Every committed record of `topic` now, in partition then offset order: reads each partition
/// to its end (the last stable offset).
pub fn read_committed_to_end(topic: &str) -> Vec<OwnedMessage> {
    let mut messages = Vec::new();
    visit_committed_to_end(topic, |message| messages.push(message.detach()));
    messages.sort_by_key(|m| (m.partition(), m.offset()));
    messages
}

/// Shows `visit` every committed record of `topic` now, each partition in offset order, without
/// keeping them (a million records read for their timestamps).
pub fn visit_committed_to_end(topic: &str, mut visit: impl FnMut(&BorrowedMessage<'_>)) {
    let consumer = committed_consumer_reporting_eof(topic, true);
    let partitions = consumer.assignment().expect("assignment").count();
    let mut ended = std::collections::HashSet::new();
    let started = Instant::now();
    while ended.len() < partitions {
        assert!(started.elapsed() < Duration::from_secs(60), "{topic} not read to its end in 60 s");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => visit(&message),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                ended.insert(partition);
            }
            // A broker that restarted (the chaos harness): the client reconnects by itself.
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure
                | rdkafka::types::RDKafkaErrorCode::AllBrokersDown,
            ))) => {}
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            None => {}
        }
    }
}

/// A read_committed reader of a whole topic that keeps its position between calls: for waiting
/// until a particular record shows up.
pub struct CommittedReader {
    consumer: BaseConsumer,
}

impl std::fmt::Debug for CommittedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommittedReader").finish_non_exhaustive()
    }
}

impl CommittedReader {
    pub fn from_beginning(topic: &str) -> Self {
        Self { consumer: committed_consumer(topic) }
    }

    /// Reads on until `accept` returns something for a record, or `deadline` passes.
    pub fn read_until<T>(
        &self,
        deadline: Duration,
        mut accept: impl FnMut(&OwnedMessage) -> Option<T>,
    ) -> Option<T> {
        let started = Instant::now();
        while started.elapsed() < deadline {
            if let Some(result) = self.consumer.poll(Duration::from_millis(50))
                && let Some(found) = accept(&result.expect("consume").detach())
            {
                return Some(found);
            }
        }
        None
    }
}

/// A service binary running as a child process, its output captured in a log file.
#[derive(Debug)]
pub struct ServiceProcess {
    child: std::process::Child,
    pub log: PathBuf,
}

impl ServiceProcess {
    /// Starts `binary` with `args` and `env` (plus `KAFKA_BOOTSTRAP_SERVERS`); stdout and stderr go
    /// to `target/test-logs/<label>.log`.
    pub fn spawn(binary: &str, label: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = repo_root().join("target/test-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log = dir.join(format!("{label}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary)
            .args(args)
            .envs(env.iter().copied())
            .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap_servers())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        Self { child, log }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, signal);
    }

    /// SIGKILL: no chance to commit, abort or leave the group.
    pub fn kill(mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process freezes (heartbeats and all) until [`Self::resume`].
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    /// SIGTERM, without waiting.
    pub fn send_sigterm(&self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    /// SIGTERM, then waits up to `grace` for the exit status.
    pub fn terminate(mut self, grace: Duration) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                started.elapsed() < grace,
                "did not exit within {grace:?} of SIGTERM; see {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// CPU time the process used so far (user and system; Linux `/proc`, 100 ticks a second).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = |index: usize| fields.get(index)?.parse::<f64>().ok();
        Some((ticks(11)? + ticks(12)?) / 100.0)
    }

    /// Peak resident set size so far (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.status_bytes("VmHWM:")
    }

    /// Resident set size now (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.status_bytes("VmRSS:")
    }

    /// A `/proc/PID/status` field given in kB, in bytes.
    fn status_bytes(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|line| line.starts_with(field))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The exit code once it has exited (`None` while running or when killed by a signal).
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.try_wait().expect("wait").and_then(|status| status.code())
    }

    /// Whether it is still running (it did not crash).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Waits until `condition` holds, polling every 100 ms, or panics with `what` after `deadline`.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < deadline, "timed out after {deadline:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The high watermarks of every partition of a topic, summed: how many records (and transaction
/// markers) it holds.
pub fn end_offsets(topic: &str) -> i64 {
    let consumer: BaseConsumer = client_config().create().expect("consumer");
    (0..partition_count(&consumer, topic))
        .map(|p| {
            let partition = i32::try_from(p).expect("partition");
            consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).expect("watermarks").1
        })
        .sum()
}

/// The sum of `group`'s committed offsets on `topic`: how many of its records an exactly-once
/// service has committed (as the records it read and the outputs they made, together).
pub fn committed_sum(group: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = client_config().set("group.id", group).create().expect("consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..partition_count(&consumer, topic) {
        list.add_partition(topic, i32::try_from(partition).expect("partition"));
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).expect("committed offsets");
    committed.elements().iter().filter_map(|e| e.offset().to_raw()).filter(|o| *o > 0).sum()
}

/// A TCP port free right now on 127.0.0.1 (for a child's admin or HTTP server).
pub fn free_port() -> u16 {
    // Below Linux's ephemeral range (32768 and up), where bind(0) and every outgoing connection
    // (a service's to the broker) take their ports: a port picked there and released can be
    // taken by a connection before the child binds it (a gateway that then could not bind left
    // the stack's readiness check answered by another process's admin server, and its events by
    // a 404). Each port once per test binary, from a start of its own (binaries run one by one,
    // but their children may linger a moment).
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    loop {
        let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(offset < SPAN, "no free port left below the ephemeral range");
        let port = u16::try_from(LOW + (start + offset) % SPAN).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1: the status code and the body; `None` if nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_with_headers(port, path).map(|(status, _, body)| (status, body))
}

/// A response's header lines: names lower-cased, values trimmed.
pub type Headers = Vec<(String, String)>;

/// `GET path`: the status, the response's headers and the body.
pub fn http_get_with_headers(port: u16, path: &str) -> Option<(u16, Headers, String)> {
    http_get_sending(port, path, &[])
}

/// `GET path` with these request headers: the status, the response's headers and the body.
pub fn http_get_sending(port: u16, path: &str, headers: &[(&str, &str)]) -> Option<(u16, Headers, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Some((status, headers, body.to_owned()))
}

/// Writes `contents` to a new uniquely named file `<label>-<unique>.<extension>` in the temp dir.
pub fn temp_file(label: &str, extension: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.{extension}", unique_topic(label)));
    std::fs::write(&path, contents).expect("write a temp file");
    path
}

/// Publishes JSON-lines events to `topic` with `omni produce`, as a producer would; panics on a
/// rejected line.
pub fn omni_produce(topic: &str, lines: &[String]) {
    let file = temp_file("events", "jsonl", &lines.join("\n"));
    let output = Command::new(workspace_binary("omni"))
        .args(["produce", "--file", file.to_str().expect("utf-8 path"), "--topic", topic])
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap_servers())
        .output()
        .expect("omni produce");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::remove_file(file).ok();
}

/// A binary of this workspace, built next to the test executables (`target/<profile>/<name>`)
/// or next to the binary that asks (the chaos harness).
pub fn workspace_binary(name: &str) -> String {
    let exe = std::env::current_exe().expect("test executable");
    let mut dir = exe.parent().expect("target directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target directory");
    }
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built: run `cargo build --release --workspace --bins`", path.display());
    path.to_string_lossy().into_owned()
}

/// The runtime's flags (`RuntimeArgs`) for one stream-processor instance under test: the one list
/// the test kit's pipeline and stack and the bench start services with.
#[derive(Debug, Clone)]
pub struct RuntimeFlags<'a> {
    pub input: &'a str,
    pub dlq: &'a str,
    pub changelog: &'a str,
    pub group: &'a str,
    pub instance: &'a str,
    pub admin_addr: &'a str,
    /// A short session timeout lets a SIGKILLed member's partitions move sooner.
    pub session_timeout_ms: Option<u32>,
}

impl RuntimeFlags<'_> {
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "--input-topic",
            self.input,
            "--dlq-topic",
            self.dlq,
            "--changelog-topic",
            self.changelog,
            "--group-id",
            self.group,
            "--instance-id",
            self.instance,
            "--admin-addr",
            self.admin_addr,
        ]
        .map(str::to_owned)
        .to_vec();
        if let Some(timeout) = self.session_timeout_ms {
            args.extend(["--session-timeout-ms".to_owned(), timeout.to_string()]);
        }
        args
    }
}
