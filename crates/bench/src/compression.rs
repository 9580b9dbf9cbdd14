//! The codecs of the batches a service writes (`--compression` for the outputs,
//! `--changelog-compression` for the changelog): profile-updater, which writes a whole profile per
//! event, drains the same events with the defaults (lz4, the changelog zstd) and with each codec
//! everywhere, for its speed and the bytes it leaves in the broker's log per input event.

use rdkafka::message::{Message, OwnedMessage};

use crate::drain_variants::{Variant, drain_variants};
use crate::{Args, Row};

/// Every run writes profiles (tombstones for erased customers aside).
fn wrote_profiles(written: &[OwnedMessage]) -> anyhow::Result<()> {
    anyhow::ensure!(written.iter().any(|message| message.payload().is_some()), "no profile written");
    Ok(())
}

pub async fn compression_rows(args: &Args, input: &str) -> anyhow::Result<Vec<Row>> {
    let settings = [
        ("lz4, changelog zstd (the defaults)", "lz4", "zstd"),
        ("lz4", "lz4", "lz4"),
        ("zstd", "zstd", "zstd"),
        ("none", "none", "none"),
    ];
    let variants: Vec<Variant<'_>> = settings
        .into_iter()
        .map(|(name, outputs, changelog)| Variant {
            name,
            input,
            flags: ["--compression", outputs, "--changelog-compression", changelog].map(str::to_owned).into(),
            env: Vec::new(),
            binary_dir: None,
            check: Box::new(wrote_profiles),
            min_ratio: None,
        })
        .collect();
    drain_variants(args, "compression", &variants).await
}
