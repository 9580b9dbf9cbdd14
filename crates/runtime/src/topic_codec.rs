//! A codec for one topic's batches, other than the producer's. librdkafka compresses per topic
//! (its topic property `compression.codec` overrides the producer's `compression.type`), but
//! rust-rdkafka sends by topic name with the producer's defaults only. A topic handle made with
//! its own configuration before anything is sent to that topic is the one librdkafka uses for
//! every later record sent there by name, for the client's life.
//!
//! The changelog is written at every commit and read only by a restore, so a denser codec pays
//! there (zstd at level 1: 12 of profile-updater's 148 bytes per input event, against lz4).

use std::ffi::CString;
use std::ptr::NonNull;

use rdkafka::bindings as rd;
use rdkafka::client::NativeClient;

use crate::config::Compression;

/// A topic handle of a client whose batches use a codec of their own. Dropped before its
/// client: librdkafka wants an application's topic handles destroyed before the client is.
#[derive(Debug)]
pub(crate) struct TopicCodec {
    handle: NonNull<rd::rd_kafka_topic_t>,
}

// SAFETY: librdkafka's topic handles may be used and destroyed from any thread; this one is
// only destroyed.
#[allow(unsafe_code)]
unsafe impl Send for TopicCodec {}

/// Why a topic's codec could not be set.
#[derive(Debug, thiserror::Error)]
#[error("the codec {codec} of topic {topic:?}: {reason}")]
pub struct TopicCodecError {
    topic: String,
    codec: &'static str,
    reason: String,
}

/// Marks the configuration this module makes, to tell its handle from one made before.
static MARKER: u8 = 0;

impl TopicCodec {
    /// Makes `client`'s handle of `topic` with `codec`. Call it before anything is sent to the
    /// topic: librdkafka keeps the configuration of a topic's first handle, and a later one with
    /// another configuration is refused here rather than ignored.
    #[allow(unsafe_code)]
    pub(crate) fn set(
        client: &NativeClient,
        topic: &str,
        codec: Compression,
    ) -> Result<Self, TopicCodecError> {
        let error =
            |reason: String| TopicCodecError { topic: topic.to_owned(), codec: codec.codec(), reason };
        let name = CString::new(topic).map_err(|_| error("a topic name has no NUL".into()))?;
        let codec_name = CString::new(codec.codec()).expect("codec names have no NUL");
        let mut properties = vec![(c"compression.codec", codec_name.as_c_str())];
        if codec == Compression::Zstd {
            // Level 1 added 2,250 instructions per event to profile-updater's drain against lz4,
            // level 3 (zstd's default) 4,150, for 2 % fewer bytes of the four services
            // (bench/results/2026-12-07-changelog-zstd.md).
            properties.push((c"compression.level", c"1"));
        }
        let marker = std::ptr::from_ref(&MARKER).cast_mut().cast::<std::ffi::c_void>();
        let mut reason = [0 as std::ffi::c_char; 512];
        // SAFETY: the configuration is ours until `rd_kafka_topic_new` takes it (on every path),
        // and destroyed here if a property is refused; every string outlives the calls that read
        // it; `client` is alive; the marker is a static only compared, never written through.
        unsafe {
            // The client's topic settings (partitioner, acks, message timeout), the codec aside.
            let conf = rd::rd_kafka_default_topic_conf_dup(client.ptr());
            for (property, value) in properties {
                let set = rd::rd_kafka_topic_conf_set(
                    conf,
                    property.as_ptr(),
                    value.as_ptr(),
                    reason.as_mut_ptr(),
                    reason.len(),
                );
                if set != rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK {
                    rd::rd_kafka_topic_conf_destroy(conf);
                    return Err(error(
                        std::ffi::CStr::from_ptr(reason.as_ptr()).to_string_lossy().into_owned(),
                    ));
                }
            }
            rd::rd_kafka_topic_conf_set_opaque(conf, marker);
            let Some(handle) = NonNull::new(rd::rd_kafka_topic_new(client.ptr(), name.as_ptr(), conf)) else {
                let code = rd::rd_kafka_last_error();
                return Err(error(
                    std::ffi::CStr::from_ptr(rd::rd_kafka_err2str(code)).to_string_lossy().into_owned(),
                ));
            };
            let codec = Self { handle };
            // A topic librdkafka already had keeps its own configuration and drops ours.
            if rd::rd_kafka_topic_opaque(handle.as_ptr()) != marker {
                return Err(error("the client had a handle of the topic already, with its own codec".into()));
            }
            Ok(codec)
        }
    }
}

impl Drop for TopicCodec {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the handle came from `rd_kafka_topic_new` and is destroyed once, before its
        // client ([`crate::TxnProducer`] declares it first).
        unsafe { rd::rd_kafka_topic_destroy(self.handle.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    use super::*;

    /// A client that never connects: making topic handles needs no broker.
    fn client() -> BaseProducer {
        ClientConfig::new().set("bootstrap.servers", "127.0.0.1:1").create().expect("a client")
    }

    #[test]
    fn given_a_topic_the_client_already_wrote_to_then_its_codec_is_refused_not_ignored() {
        let producer = client();
        producer.send(BaseRecord::to("written").key("k").payload("v")).expect("queued");
        let native = producer.client().native_client();
        let refused = TopicCodec::set(native, "written", Compression::Zstd).expect_err("refused");
        assert!(refused.to_string().contains("had a handle of the topic already"), "{refused}");
        let fresh = TopicCodec::set(native, "changelog", Compression::Zstd);
        assert!(fresh.is_ok(), "{fresh:?}");
    }
}
