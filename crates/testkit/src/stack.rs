//! The whole pipeline as child processes on fresh topics: the four services, the ingest-gateway
//! and the customer-api, driven over HTTP as producers and downstream systems use it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use omnistream_model::services::{self, OutputSpec, stream_processors};
use omnistream_model::topics::{CATALOG_EVENTS_TOPIC, JOURNEY_DEFINITIONS_TOPIC};
use omnistream_runtime::admin::TopicRequest;
use rdkafka::ClientConfig;
use serde_json::Value;

use crate::pipeline::PARTITIONS;
use crate::{
    ServiceProcess, bootstrap_servers, create_topics_and_wait, free_port, temp_file, unique_topic,
    workspace_binary,
};

/// journeys' lookup grace in a stack: a definition published reaches events appended this much
/// later.
pub const JOURNEYS_LOOKUP_GRACE: Duration = Duration::from_secs(4);

/// How a stack is started.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Bootstrap servers; default: the shared test broker.
    pub bootstrap: Option<String>,
    /// suppression's rules file contents (TOML); default: the built-in rules.
    pub suppression_rules: Option<String>,
    /// Extra ingest-gateway flags.
    pub gateway_args: Vec<String>,
    /// Extra customer-api flags (e.g. its API keys).
    pub api_args: Vec<String>,
    /// Identity resolution on (docs/identity.md): identity-resolver's two stages read the
    /// events, and the services read the resolved events, each with its handoff topic.
    pub resolution: bool,
    /// A schema registry (its Confluent-compatible API): every process that writes Avro writes
    /// the Confluent wire format (`--wire-format confluent`), every reader learns schema ids.
    pub registry: Option<String>,
    /// Environment variables of every process (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub env: Vec<(String, String)>,
    /// Replicas of every topic; default 1 (the single test broker).
    pub replication_factor: Option<i32>,
}

/// The topics of one stack.
#[derive(Debug, Clone)]
pub struct StackTopics {
    pub events: String,
    pub dlq: String,
    /// Every stream processor's and identity stage's outputs, by role (`services.rs`): e.g.
    /// `profiles`, `ledger`, `conflicts`, `identity` (the identity stages' only with resolution,
    /// but `identity` always: the customer-api reads it).
    pub outputs: BTreeMap<&'static str, String>,
    /// The journeys service's published definitions (`omni journeys publish --topic`).
    pub definitions: String,
    /// Products' catalog events (the gateway's `POST /v1/catalog/events`, read by journeys).
    pub catalog: String,
}

impl StackTopics {
    /// The topic of an output role; panics on a role no service has.
    pub fn output(&self, role: &str) -> &str {
        self.outputs.get(role).unwrap_or_else(|| panic!("no service writes {role:?}"))
    }
}

/// A process of the stack and how to start it again.
#[derive(Debug)]
struct Member {
    name: &'static str,
    binary: &'static str,
    process: Option<ServiceProcess>,
    args: Vec<String>,
    /// Where `GET /readyz` answers.
    ready_port: u16,
    /// How often it was started.
    starts: u32,
}

/// Every omnistream process of one pipeline.
#[derive(Debug)]
pub struct Stack {
    pub topics: StackTopics,
    pub bootstrap: String,
    /// Public HTTP ports.
    pub gateway_port: u16,
    pub api_port: u16,
    /// Sent as bearer token by [`Self::api`] (an API started with keys in `api_args`).
    pub api_key: Option<String>,
    label: String,
    env: Vec<(String, String)>,
    members: Vec<Member>,
    client: reqwest::Client,
}

impl Stack {
    /// Creates fresh topics and starts every process; returns once the gateway and the API are
    /// ready.
    pub async fn start(label: &str, options: StackOptions) -> Self {
        let bootstrap = options.bootstrap.clone().unwrap_or_else(|| bootstrap_servers().to_owned());
        let topic = |name: &str| unique_topic(&format!("{label}-{name}"));
        let identity_stages = if options.resolution { services::IDENTITY_STAGES } else { &[] };
        let identity_output = services::IDENTITY_CUSTOMERS.output("identity");
        let outputs: BTreeMap<&'static str, String> = stream_processors()
            .chain(identity_stages)
            .flat_map(|service| service.outputs)
            .chain([identity_output])
            .map(|output| (output.role, topic(output.role)))
            .collect();
        let topics = StackTopics {
            events: topic("events"),
            dlq: topic("dlq"),
            outputs,
            definitions: topic("definitions"),
            catalog: topic("catalog"),
        };
        let replicas = options.replication_factor.unwrap_or(1);
        let group = unique_topic(&format!("{label}-group"));
        let changelog = |service: &str| format!("{group}.{service}.state");
        let handoff = |service: &str| format!("{group}.{service}.handoff");
        let mut requests = vec![
            TopicRequest::events(&topics.events, PARTITIONS, replicas),
            TopicRequest::plain(&topics.dlq, PARTITIONS, replicas),
            TopicRequest::for_spec(&JOURNEY_DEFINITIONS_TOPIC, &topics.definitions, 1, replicas),
            // Two partitions: a broadcast input is read whole, whichever partition a product is on.
            TopicRequest::for_spec(&CATALOG_EVENTS_TOPIC, &topics.catalog, 2, replicas),
        ];
        for service in stream_processors().chain(identity_stages) {
            for output in service.outputs {
                let request =
                    TopicRequest::for_spec(output.topic, topics.output(output.role), PARTITIONS, replicas);
                if !requests.iter().any(|known| known.name == request.name) {
                    requests.push(request);
                }
            }
            requests.push(TopicRequest::compacted(&changelog(service.name), PARTITIONS, replicas));
            if let (true, Some(spec)) = (options.resolution, service.handoff) {
                requests.push(TopicRequest::for_spec(spec, &handoff(service.name), PARTITIONS, replicas));
            }
        }
        if !options.resolution {
            requests.push(TopicRequest::for_spec(
                identity_output.topic,
                topics.output(identity_output.role),
                PARTITIONS,
                replicas,
            ));
        }
        let mut admin = ClientConfig::new();
        admin.set("bootstrap.servers", &bootstrap);
        // Every process finds its topics: a just-created one can be missing from a broker's
        // metadata for a moment (a processor then stops, as it should).
        create_topics_and_wait(admin, &requests).await;

        // With resolution the services read what the resolver publishes.
        let services_input = match options.resolution {
            true => topics.output("resolved").to_owned(),
            false => topics.events.clone(),
        };
        let registry_flags: Vec<String> = match &options.registry {
            Some(url) => vec!["--schema-registry-url".to_owned(), url.clone()],
            None => Vec::new(),
        };
        let confluent: Vec<String> = match &options.registry {
            Some(_) => registry_flags
                .iter()
                .cloned()
                .chain(["--wire-format".to_owned(), "confluent".to_owned()])
                .collect(),
            None => Vec::new(),
        };
        // Each processor's admin port, to wait until it is ready (assigned, state restored).
        let mut admin_ports: Vec<(&'static str, u16)> = Vec::new();
        let mut runtime = |service: &'static str, input: &str| -> Vec<String> {
            let admin_port = free_port();
            admin_ports.push((service, admin_port));
            let flags = crate::RuntimeFlags {
                input,
                dlq: &topics.dlq,
                changelog: &changelog(service),
                group: &format!("{group}-{service}"),
                instance: label,
                admin_addr: &format!("127.0.0.1:{admin_port}"),
                session_timeout_ms: Some(6_000),
            };
            let mut args = vec!["--bootstrap-servers".to_owned(), bootstrap.clone()];
            args.extend(flags.args());
            args.extend(confluent.iter().cloned());
            args
        };
        let gateway_port = free_port();
        let api_port = free_port();
        let mut members: Vec<(&'static str, &'static str, Vec<String>)> = Vec::new();
        let ready_port = |name: &str, admin_ports: &[(&'static str, u16)]| match name {
            "ingest-gateway" => gateway_port,
            "customer-api" => api_port,
            _ => admin_ports.iter().find(|(service, _)| *service == name).expect("an admin port").1,
        };
        for stage in identity_stages {
            // `identity-claims` runs as `identity-resolver claims`.
            let subcommand = stage.name.trim_start_matches("identity-");
            let mut args = vec![subcommand.to_owned()];
            args.extend(runtime(stage.name, &topics.events));
            for output in stage.outputs {
                args.extend([output.flag.to_owned(), topics.output(output.role).to_owned()]);
            }
            members.push((stage.name, "identity-resolver", args));
        }
        for service in stream_processors() {
            let mut args = runtime(service.name, &services_input);
            for output in service.outputs {
                args.extend([output.flag.to_owned(), topics.output(output.role).to_owned()]);
            }
            if options.resolution && service.handoff.is_some() {
                args.extend(["--handoff-topic".to_owned(), handoff(service.name)]);
            }
            if service.name == services::JOURNEYS.name {
                args.extend(["--definitions-topic".to_owned(), topics.definitions.clone()]);
                args.extend(["--catalog-topic".to_owned(), topics.catalog.clone()]);
                // A definition a test publishes reaches events appended the grace later: 4 s, not
                // the default 15 (the grace stays longer than the transaction timeout).
                let grace = JOURNEYS_LOOKUP_GRACE.as_millis().to_string();
                args.extend(
                    ["--lookup-grace-ms", &grace, "--transaction-timeout-ms", "3000"].map(str::to_owned),
                );
            }
            members.push((service.name, service.name, args));
        }
        if let Some(rules) = &options.suppression_rules {
            // journeys decides sends by the suppression service's rules file.
            let file = temp_file("suppression-rules", "toml", rules).to_string_lossy().into_owned();
            for (name, _, args) in &mut members {
                match *name {
                    name if name == services::SUPPRESSION.name => {
                        args.extend(["--rules".to_owned(), file.clone()])
                    }
                    name if name == services::JOURNEYS.name => {
                        args.extend(["--suppression-rules".to_owned(), file.clone()]);
                    }
                    _ => {}
                }
            }
        }
        members.extend([
            ("ingest-gateway", "ingest-gateway", {
                let mut args: Vec<String> = [
                    "--bootstrap-servers",
                    &bootstrap,
                    "--events-topic",
                    &topics.events,
                    "--catalog-topic",
                    &topics.catalog,
                    "--http-addr",
                    &format!("127.0.0.1:{gateway_port}"),
                    "--admin-addr",
                    "127.0.0.1:0",
                ]
                .map(str::to_owned)
                .to_vec();
                args.extend(confluent.iter().cloned());
                args.extend(options.gateway_args.iter().cloned());
                args
            }),
            ("customer-api", "customer-api", {
                let mut args: Vec<String> = [
                    "--bootstrap-servers",
                    &bootstrap,
                    "--http-addr",
                    &format!("127.0.0.1:{api_port}"),
                    "--admin-addr",
                    "127.0.0.1:0",
                ]
                .map(str::to_owned)
                .to_vec();
                args.extend(registry_flags.iter().cloned());
                // It reads the processors' outputs it serves under the flags the processors write them.
                let served = |output: &&OutputSpec| {
                    services::CUSTOMER_API.inputs.iter().any(|input| input.topic.name == output.topic.name)
                };
                for output in stream_processors()
                    .flat_map(|service| service.outputs)
                    .chain([identity_output])
                    .filter(served)
                {
                    args.extend([output.flag.to_owned(), topics.output(output.role).to_owned()]);
                }
                args.extend(options.api_args.iter().cloned());
                args
            }),
        ]);
        let mut stack = Self {
            topics,
            bootstrap,
            gateway_port,
            api_port,
            api_key: None,
            label: label.to_owned(),
            env: options.env.clone(),
            members: members
                .into_iter()
                .map(|(name, binary, args)| {
                    let ready_port = ready_port(name, &admin_ports);
                    Member { name, binary, process: None, args, ready_port, starts: 0 }
                })
                .collect(),
            client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client"),
        };
        for index in 0..stack.members.len() {
            stack.spawn(index);
        }
        // Tests time what the pipeline does, not how long its processes take to join their groups.
        for (name, port) in
            [("ingest-gateway", gateway_port), ("customer-api", api_port)].into_iter().chain(admin_ports)
        {
            stack.wait_ready(name, port, Duration::from_secs(60)).await;
        }
        stack
    }

    fn spawn(&mut self, index: usize) {
        // An added instance logs to a file of its own.
        let added = self.members[..index].iter().any(|m| m.name == self.members[index].name);
        let member = &mut self.members[index];
        let args: Vec<&str> = member.args.iter().map(String::as_str).collect();
        let mut log = match added {
            true => format!("{}-{}-{index}", self.label, member.name),
            false => format!("{}-{}", self.label, member.name),
        };
        // A restart logs to a file of its own: the last words of the process before are evidence.
        if member.starts > 0 {
            log = format!("{log}.{}", member.starts);
        }
        member.starts += 1;
        let mut env: Vec<(&str, &str)> = vec![("RUST_LOG", "info,rdkafka=warn")];
        env.extend(self.env.iter().map(|(name, value)| (name.as_str(), value.as_str())));
        member.process = Some(ServiceProcess::spawn(&workspace_binary(member.binary), &log, &args, &env));
    }

    /// Publishes journey definitions (TOML texts) to the stack's definitions topic with
    /// `omni journeys publish`, as an operator would; panics if it refuses one. Events appended
    /// 4 s later (the stack's lookup grace) enter them.
    pub fn publish_journeys(&self, definitions: &[&str]) {
        let files: Vec<std::path::PathBuf> =
            definitions.iter().map(|text| temp_file("journey", "toml", text)).collect();
        let output = std::process::Command::new(workspace_binary("omni"))
            .args(["journeys", "publish", "--topic", &self.topics.definitions])
            .args(&files)
            .env("KAFKA_BOOTSTRAP_SERVERS", &self.bootstrap)
            .output()
            .expect("omni journeys publish");
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for file in files {
            std::fs::remove_file(file).ok();
        }
    }

    /// Waits until `GET /readyz` on `port` answers 200.
    pub async fn wait_ready(&self, name: &str, port: u16, deadline: Duration) {
        let started = Instant::now();
        loop {
            let url = format!("http://127.0.0.1:{port}/readyz");
            if let Ok(response) = self.client.get(&url).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(started.elapsed() < deadline, "{name} not ready within {deadline:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts again every process that exited (as an orchestrator would); returns their names.
    pub fn restart_exited(&mut self) -> Vec<&'static str> {
        let mut restarted = Vec::new();
        for index in 0..self.members.len() {
            if self.members[index].process.as_mut().is_some_and(|p| !p.is_running()) {
                restarted.push(self.members[index].name);
                self.spawn(index);
            }
        }
        restarted
    }

    /// SIGKILLs a process and starts it again with the same flags (same instance id).
    pub fn sigkill_and_restart(&mut self, name: &str) {
        let index = self.members.iter().position(|m| m.name == name).expect("a stack member");
        self.sigkill_and_restart_instance(index);
    }

    /// The indexes of a member's instances (the first started, then those [`Self::add_instance`]
    /// added and not removed).
    pub fn instances(&self, name: &str) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&index| self.members[index].name == name && self.members[index].process.is_some())
            .collect()
    }

    /// The process of instance `index`, when it runs.
    pub fn process(&self, index: usize) -> Option<&ServiceProcess> {
        self.members[index].process.as_ref()
    }

    /// A member's name by index.
    pub fn name(&self, index: usize) -> &'static str {
        self.members[index].name
    }

    /// SIGKILLs instance `index` and starts it again with the same flags (same instance id).
    pub fn sigkill_and_restart_instance(&mut self, index: usize) {
        if let Some(process) = self.members[index].process.take() {
            process.kill();
        }
        self.spawn(index);
    }

    /// One more instance of a stream processor, as an autoscaler adds one: the same flags under
    /// its own instance id (hence transactional id) and admin port. Returns its index.
    pub fn add_instance(&mut self, name: &str) -> usize {
        let first = self.members.iter().position(|m| m.name == name).expect("a stack member");
        let (member_name, binary) = (self.members[first].name, self.members[first].binary);
        let number = self.members.len();
        let ready_port = free_port();
        let mut args = self.members[first].args.clone();
        for (flag, value) in [
            ("--instance-id", format!("{}-{number}", self.label)),
            ("--admin-addr", format!("127.0.0.1:{ready_port}")),
        ] {
            let at = args.iter().position(|arg| arg == flag).expect("a runtime flag") + 1;
            args[at] = value;
        }
        self.members.push(Member { name: member_name, binary, process: None, args, ready_port, starts: 0 });
        self.spawn(number);
        number
    }

    /// Takes instance `index` out of the stack (not restarted, not counted as running); the
    /// caller stops it, e.g. with SIGTERM as an autoscaler does.
    pub fn detach_instance(&mut self, index: usize) -> Option<ServiceProcess> {
        self.members[index].process.take()
    }

    /// Whether instance `index` answers `GET /readyz` with 200.
    pub async fn is_ready(&self, index: usize) -> bool {
        let url = format!("http://127.0.0.1:{}/readyz", self.members[index].ready_port);
        matches!(self.client.get(&url).timeout(Duration::from_secs(2)).send().await, Ok(r) if r.status().is_success())
    }

    /// The indexes of every running instance.
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len()).filter(|&index| self.members[index].process.is_some()).collect()
    }

    /// `POST /v1/events` on the gateway with `body` (and `api_key` as bearer token): status and
    /// the JSON answer.
    pub async fn post_events(&self, body: &Value, api_key: Option<&str>) -> (u16, Value) {
        self.post("/v1/events", body, api_key).await
    }

    /// `POST /v1/catalog/events` on the gateway, as [`Self::post_events`].
    pub async fn post_catalog_events(&self, body: &Value, api_key: Option<&str>) -> (u16, Value) {
        self.post("/v1/catalog/events", body, api_key).await
    }

    async fn post(&self, path: &str, body: &Value, api_key: Option<&str>) -> (u16, Value) {
        let mut request =
            self.client.post(format!("http://127.0.0.1:{}{path}", self.gateway_port)).json(body);
        if let Some(key) = api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET` on the customer-api: status and JSON body (`Null` when it is not JSON).
    pub async fn api(&self, path: &str) -> (u16, Value) {
        let mut request = self.client.get(format!("http://127.0.0.1:{}{path}", self.api_port));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls `path` on the API every 20 ms until `check` accepts a 200 answer; panics with the
    /// last answer after `deadline`.
    pub async fn api_until(&self, path: &str, deadline: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let (status, body) = self.api(path).await;
            if status == 200 && check(&body) {
                return body;
            }
            assert!(
                started.elapsed() < deadline,
                "{path} did not get there within {deadline:?}: {status} {body}\n{}",
                self.warnings()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last warnings and errors each member logged, for a failed wait to show why.
    pub fn warnings(&self) -> String {
        let mut report = String::new();
        for member in &self.members {
            let Some(process) = &member.process else { continue };
            let text = std::fs::read_to_string(&process.log).unwrap_or_default();
            let troubles: Vec<&str> = text
                .lines()
                .filter(|line| {
                    ["\"level\":\"WARN\"", "\"level\":\"ERROR\"", "Error: ", "panicked"]
                        .iter()
                        .any(|mark| line.contains(mark))
                })
                .collect();
            for line in &troubles[troubles.len().saturating_sub(5)..] {
                report.push_str(&format!("{}: {line}\n", member.name));
            }
        }
        report
    }
}
