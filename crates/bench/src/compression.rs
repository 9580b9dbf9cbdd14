//! The codec of the batches a service writes (`--compression`): profile-updater, which writes a
//! whole profile per event, drains the same events with each, for its speed and the bytes it
//! leaves in the broker's log per input event.

use rdkafka::message::{Message, OwnedMessage};

use crate::drain_variants::{Variant, drain_variants};
use crate::{Args, Row};

/// Every run writes profiles (tombstones for erased customers aside).
fn wrote_profiles(written: &[OwnedMessage]) -> anyhow::Result<()> {
    anyhow::ensure!(written.iter().any(|message| message.payload().is_some()), "no profile written");
    Ok(())
}

pub async fn compression_rows(args: &Args, input: &str) -> anyhow::Result<Vec<Row>> {
    let variants: Vec<Variant<'_>> = ["lz4", "zstd", "none"]
        .into_iter()
        .map(|codec| Variant {
            name: codec,
            input,
            flags: vec!["--compression".to_owned(), codec.to_owned()],
            env: Vec::new(),
            binary_dir: None,
            check: Box::new(wrote_profiles),
            min_ratio: None,
        })
        .collect();
    drain_variants(args, "compression", &variants).await
}
