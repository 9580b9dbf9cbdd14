//! `omni topics create`: every topic of SPEC 3 with its cleanup policy, idempotently.

use std::process::ExitCode;

use clap::Subcommand;
use omnistream_model::services::pipeline_topics;
use omnistream_runtime::KafkaArgs;
use omnistream_runtime::admin::{TopicOutcome, TopicRequest, create_topics};

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create the pipeline topics; existing ones are left as they are.
    Create {
        /// Partitions per topic; all pipeline topics share it (co-partitioning).
        #[arg(long, env = "TOPIC_PARTITIONS", default_value_t = 6)]
        partitions: i32,
        /// Replicas per partition (1 on the local single-node broker).
        #[arg(long, env = "TOPIC_REPLICATION", default_value_t = 1)]
        replication: i32,
        /// Prefix for every topic name (e.g. an environment or a test run).
        #[arg(long, env = "TOPIC_PREFIX", default_value = "")]
        prefix: String,
    },
    /// List the pipeline topics with their cleanup policies.
    List,
}

pub async fn run(kafka: &KafkaArgs, command: TopicsCommand) -> anyhow::Result<ExitCode> {
    match command {
        TopicsCommand::Create { partitions, replication, prefix } => {
            let requests: Vec<TopicRequest> = pipeline_topics()
                .into_iter()
                .map(|spec| {
                    TopicRequest::for_spec(spec, &format!("{prefix}{}", spec.name), partitions, replication)
                })
                .collect();
            for (topic, outcome) in create_topics(&kafka.client_config()?, &requests).await? {
                let what = match outcome {
                    TopicOutcome::Created => "created",
                    TopicOutcome::AlreadyExisted => "exists",
                };
                println!("{what:8} {topic}");
            }
        }
        TopicsCommand::List => {
            for spec in pipeline_topics() {
                println!("{:32} {:?} ({})", spec.name, spec.cleanup, spec.value);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
