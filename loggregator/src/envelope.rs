//! The Loggregator v2 envelope, in the JSON shape of the RLP gateway: int64 fields as
//! strings, log payloads base64. Every component that emits logs or metrics builds these.

use std::collections::BTreeMap;

use base64::Engine as _;

use serde::{Deserialize, Serialize};

/// Subject on the message bus that carries envelopes: JSON, one [`Envelope`] or an
/// [`EnvelopeBatch`] a message.
pub const ENVELOPE_SUBJECT: &str = "loggregator.envelopes";

/// Loggregator v2's `EnvelopeBatch`: `{"batch": [...]}`. A busy emitter (an instance's
/// log forwarder) sends its envelopes in batches, one bus message each.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeBatch {
    pub batch: Vec<Envelope>,
}

impl EnvelopeBatch {
    /// Whether the JSON `payload` is a batch rather than a single envelope: its first
    /// key is `batch` (an envelope has none).
    pub fn is_batch(payload: &[u8]) -> bool {
        payload
            .trim_ascii_start()
            .strip_prefix(b"{")
            .is_some_and(|rest| rest.trim_ascii_start().starts_with(b"\"batch\""))
    }

    /// The envelopes of one bus message on [`ENVELOPE_SUBJECT`]: a batch, or a single
    /// envelope.
    pub fn decode(payload: &[u8]) -> Result<Vec<Envelope>, serde_json::Error> {
        if EnvelopeBatch::is_batch(payload) {
            serde_json::from_slice::<EnvelopeBatch>(payload).map(|b| b.batch)
        } else {
            serde_json::from_slice::<Envelope>(payload).map(|e| vec![e])
        }
    }
}

/// `Serialize` is written out (below) rather than derived: the derived one goes through
/// serde's flattening map, and every RTR access line is serialized.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Envelope {
    /// Unix time in nanoseconds.
    #[serde(deserialize_with = "i64_as_string::deserialize")]
    pub timestamp: i64,
    /// For app logs the app guid; for platform components their name.
    pub source_id: String,
    /// For app logs the instance index.
    #[serde(default)]
    pub instance_id: String,
    /// `source_type` (APP/PROC/WEB, STG, RTR, API, CELL) and other tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(flatten)]
    pub message: EnvelopeMessage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvelopeMessage {
    Log(Log),
    Counter(Counter),
    Gauge(Gauge),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogType {
    #[serde(rename = "OUT")]
    Out,
    #[serde(rename = "ERR")]
    Err,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Log {
    /// Raw bytes of the line, base64 in JSON.
    #[serde(with = "bytes_as_base64")]
    pub payload: Vec<u8>,
    #[serde(rename = "type")]
    pub log_type: LogType,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub name: String,
    #[serde(with = "u64_as_string", default)]
    pub delta: u64,
    #[serde(with = "u64_as_string", default)]
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gauge {
    pub metrics: BTreeMap<String, GaugeValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaugeValue {
    pub unit: String,
    pub value: f64,
}

impl Envelope {
    /// A log line from `source_id`/`instance_id` with the given `source_type` tag.
    pub fn log(
        source_id: &str,
        instance_id: &str,
        source_type: &str,
        log_type: LogType,
        payload: impl Into<Vec<u8>>,
    ) -> Self {
        let mut tags = BTreeMap::new();
        tags.insert("source_type".to_string(), source_type.to_string());
        Envelope {
            timestamp: now_ns(),
            source_id: source_id.to_string(),
            instance_id: instance_id.to_string(),
            tags,
            message: EnvelopeMessage::Log(Log {
                payload: payload.into(),
                log_type,
            }),
        }
    }

    /// Roughly the memory this envelope holds: its struct plus every string and payload
    /// byte. The log cache bounds each source by the sum of these.
    pub fn approximate_size(&self) -> usize {
        const PER_ENTRY: usize = 2 * std::mem::size_of::<String>();
        let tags: usize = self
            .tags
            .iter()
            .map(|(k, v)| PER_ENTRY + k.len() + v.len())
            .sum();
        let message = match &self.message {
            EnvelopeMessage::Log(log) => log.payload.len(),
            EnvelopeMessage::Counter(counter) => counter.name.len(),
            EnvelopeMessage::Gauge(gauge) => gauge
                .metrics
                .iter()
                .map(|(name, v)| PER_ENTRY + name.len() + v.unit.len())
                .sum(),
        };
        std::mem::size_of::<Envelope>()
            + self.source_id.len()
            + self.instance_id.len()
            + tags
            + message
    }

    /// The `source_type` tag, if any.
    pub fn source_type(&self) -> Option<&str> {
        self.tags.get("source_type").map(String::as_str)
    }
}

impl Serialize for Envelope {
    /// The derived shape: the message's variant is a key beside the envelope's fields.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut timestamp = itoa::Buffer::new();
        let mut envelope = s.serialize_struct("Envelope", 5)?;
        envelope.serialize_field("timestamp", timestamp.format(self.timestamp))?;
        envelope.serialize_field("source_id", &self.source_id)?;
        envelope.serialize_field("instance_id", &self.instance_id)?;
        envelope.serialize_field("tags", &self.tags)?;
        match &self.message {
            EnvelopeMessage::Log(log) => envelope.serialize_field("log", log)?,
            EnvelopeMessage::Counter(counter) => envelope.serialize_field("counter", counter)?,
            EnvelopeMessage::Gauge(gauge) => envelope.serialize_field("gauge", gauge)?,
        }
        envelope.end()
    }
}

/// An [`EnvelopeBatch`] of log envelopes, written as JSON as they are added: the bytes
/// `serde_json::to_vec` gives for a batch of the same [`Envelope::log`]s, without
/// building them. The router writes an envelope for every request it serves, and a
/// chatty app one a line.
pub struct LogBatch {
    json: Vec<u8>,
    len: usize,
}

impl Default for LogBatch {
    fn default() -> Self {
        LogBatch {
            json: b"{\"batch\":[".to_vec(),
            len: 0,
        }
    }
}

impl LogBatch {
    /// A batch with room for about `bytes` of JSON, so that adding envelopes does not
    /// grow (and copy) it again and again.
    pub fn with_capacity(bytes: usize) -> LogBatch {
        let mut batch = LogBatch::default();
        batch.json.reserve(bytes);
        batch
    }

    /// Adds what `Envelope::log(source_id, instance_id, source_type, log_type, payload)`
    /// would make now.
    pub fn push(
        &mut self,
        source_id: &str,
        instance_id: &str,
        source_type: &str,
        log_type: LogType,
        payload: &[u8],
    ) {
        // Writing into a Vec cannot fail, nor can serializing a str.
        fn string(json: &mut Vec<u8>, s: &str) {
            let _ = serde_json::to_writer(&mut *json, s);
        }
        let json = &mut self.json;
        if self.len > 0 {
            json.push(b',');
        }
        self.len += 1;
        json.extend_from_slice(b"{\"timestamp\":\"");
        json.extend_from_slice(itoa::Buffer::new().format(now_ns()).as_bytes());
        json.extend_from_slice(b"\",\"source_id\":");
        string(json, source_id);
        json.extend_from_slice(b",\"instance_id\":");
        string(json, instance_id);
        json.extend_from_slice(b",\"tags\":{\"source_type\":");
        string(json, source_type);
        json.extend_from_slice(b"},\"log\":{\"payload\":\"");
        let start = json.len();
        json.resize(
            start + base64::encoded_len(payload.len(), true).unwrap_or(0),
            0,
        );
        // The buffer was sized for the encoding.
        let _ = base64::engine::general_purpose::STANDARD.encode_slice(payload, &mut json[start..]);
        json.extend_from_slice(match log_type {
            LogType::Out => b"\",\"type\":\"OUT\"}}",
            LogType::Err => b"\",\"type\":\"ERR\"}}",
        });
    }

    /// Envelopes in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The batch's JSON.
    pub fn into_json(mut self) -> Vec<u8> {
        self.json.extend_from_slice(b"]}");
        self.json
    }
}

/// Unix time now, in nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// Serialized by `Envelope`'s own `Serialize`; read as a string or a number.
mod i64_as_string {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            S(String),
            N(i64),
        }
        match Either::deserialize(d)? {
            Either::S(s) => s.parse().map_err(serde::de::Error::custom),
            Either::N(n) => Ok(n),
        }
    }
}

mod u64_as_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            S(String),
            N(u64),
        }
        match Either::deserialize(d)? {
            Either::S(s) => s.parse().map_err(serde::de::Error::custom),
            Either::N(n) => Ok(n),
        }
    }
}

mod bytes_as_base64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    #[test]
    fn log_envelope_has_the_rlp_gateway_json_shape() {
        let mut e = Envelope::log("app-guid", "0", "APP/PROC/WEB", LogType::Out, "hi");
        e.timestamp = 1_700_000_000_000_000_000;
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["timestamp"], "1700000000000000000");
        assert_eq!(
            v["log"]["payload"],
            base64::engine::general_purpose::STANDARD.encode("hi")
        );
        assert_eq!(v["log"]["type"], "OUT");
        assert_eq!(v["tags"]["source_type"], "APP/PROC/WEB");
        let back: Envelope = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn log_batches_are_written_as_serde_writes_them() {
        let lines: [(&str, &str, &str, LogType, &[u8]); 3] = [
            ("app-guid", "0", "RTR", LogType::Out, b"GET / 200"),
            (
                "we\"ird\\id\n",
                "12",
                "APP/PROC/WEB",
                LogType::Err,
                b"\xff\x00 not utf-8",
            ),
            ("app-guid", "", "STG", LogType::Out, b""),
        ];
        let before = now_ns();
        let mut batch = LogBatch::default();
        assert!(batch.is_empty());
        for (source, instance, source_type, log_type, payload) in lines {
            batch.push(source, instance, source_type, log_type, payload);
        }
        assert_eq!(batch.len(), 3);
        let json = batch.into_json();
        let decoded = EnvelopeBatch::decode(&json).unwrap();
        let expected: Vec<Envelope> = lines
            .iter()
            .zip(&decoded)
            .map(
                |((source, instance, source_type, log_type, payload), got)| {
                    assert!((before..=now_ns()).contains(&got.timestamp));
                    let mut e = Envelope::log(source, instance, source_type, *log_type, *payload);
                    e.timestamp = got.timestamp;
                    e
                },
            )
            .collect();
        assert_eq!(decoded, expected);
        let serde_bytes = serde_json::to_vec(&EnvelopeBatch { batch: expected }).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            String::from_utf8(serde_bytes).unwrap()
        );
        assert_eq!(LogBatch::default().into_json(), b"{\"batch\":[]}");
    }
}
