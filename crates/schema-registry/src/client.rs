//! The Confluent-compatible REST API, the part omnistream uses: subject compatibility,
//! registering a version, a schema by id.

use std::time::Duration;

use base64::Engine;
use omnistream_model::RecordKind;
use serde_json::{Value, json};
use tracing::{info, warn};
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use crate::SchemaRegistryArgs;

/// How long one request to the registry may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// What went wrong with the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "the topic {topic} is written in the Confluent wire format, which needs a schema registry (SCHEMA_REGISTRY_URL)"
    )]
    NoRegistry { topic: String },
    #[error(
        "the topic {topic} does not hold Avro records: it cannot be written in the Confluent wire format"
    )]
    NotAvro { topic: String },
    #[error("schema registry settings: {0}")]
    Settings(String),
    #[error("the schema registry at {url} cannot be reached: {message}")]
    Unreachable { url: String, message: String },
    #[error(
        "the schema registry refuses the schema of {kind:?} for subject {subject}: it is incompatible \
         ({compatibility}) with the versions registered before: {message}"
    )]
    Incompatible { subject: String, kind: RecordKind, compatibility: String, message: String },
    #[error("the schema registry answered {status} to {request}: {message}")]
    Refused { request: String, status: u16, message: String },
    #[error("the schema registry has no schema id {id}")]
    NoSuchId { id: u32 },
}

impl RegistryError {
    /// Whether asking again later may succeed (the registry was down or overloaded).
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Refused { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// A client of one registry.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: String,
    agent: ureq::Agent,
    authorization: Option<String>,
}

struct Answer {
    status: u16,
    body: Value,
}

impl RegistryClient {
    pub(crate) fn new(url: &str, args: &SchemaRegistryArgs) -> Result<Self, RegistryError> {
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .user_agent(concat!("omnistream/", env!("CARGO_PKG_VERSION")));
        if args.schema_registry_ca.is_some() || args.schema_registry_certificate.is_some() {
            let mut tls = TlsConfig::builder();
            if let Some(path) = &args.schema_registry_ca {
                tls = tls.root_certs(RootCerts::new_with_certs(&certificates(path)?));
            }
            if let (Some(chain), Some(key)) = (&args.schema_registry_certificate, &args.schema_registry_key) {
                let key = PrivateKey::from_pem(&read(key)?)
                    .map_err(|e| RegistryError::Settings(format!("{}: {e}", key.display())))?;
                tls = tls.client_cert(Some(ClientCert::new_with_certs(&certificates(chain)?, key)));
            }
            config = config.tls_config(tls.build());
        }
        let authorization = match &args.schema_registry_basic_auth {
            Some(user_info) if !user_info.contains(':') => {
                return Err(RegistryError::Settings("the basic auth user info is not USER:PASSWORD".into()));
            }
            Some(user_info) => {
                Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_info)))
            }
            None => None,
        };
        Ok(Self { base: url.trim_end_matches('/').to_owned(), agent: config.build().into(), authorization })
    }

    /// The registry's address.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer, RegistryError> {
        let url = format!("{}{path}", self.base);
        let unreachable =
            |e: ureq::Error| RegistryError::Unreachable { url: self.base.clone(), message: e.to_string() };
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Accept", CONTENT_TYPE)
            .header("Content-Type", CONTENT_TYPE);
        let request = match &self.authorization {
            Some(value) => request.header("Authorization", value),
            None => request,
        };
        let text = body.map(Value::to_string).unwrap_or_default();
        let request = request.body(text).map_err(|e| RegistryError::Settings(format!("{url}: {e}")))?;
        let mut response = self.agent.run(request).map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(unreachable)?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, body })
    }

    fn refused(request: String, answer: &Answer) -> RegistryError {
        RegistryError::Refused { request, status: answer.status, message: message_of(&answer.body) }
    }

    /// The compatibility level that applies to the subject, set to BACKWARD on the subject
    /// first if none applies (a registry checks nothing without one; Apicurio reports an unset
    /// level as NONE). A level an operator set, on the subject or globally, is kept. A registry
    /// that does not let this client set it (403) keeps its own rules: said, not fatal.
    pub fn ensure_backward(&self, subject: &str) -> Result<String, RegistryError> {
        let level_at = |path: &str| -> Result<Option<String>, RegistryError> {
            let answer = self.call("GET", path, None)?;
            match answer.status {
                200 => Ok(answer.body["compatibilityLevel"].as_str().map(str::to_owned)),
                404 => Ok(None),
                _ => Err(Self::refused(format!("GET {path}"), &answer)),
            }
        };
        let path = format!("/config/{subject}");
        let level = match level_at(&path)? {
            Some(level) => level,
            None => level_at("/config")?.unwrap_or_else(|| "NONE".to_owned()),
        };
        if level != "NONE" {
            return Ok(level);
        }
        let answer = self.call("PUT", &path, Some(&json!({"compatibility": "BACKWARD"})))?;
        match answer.status {
            200 => {
                info!(subject, "schema registry: compatibility set to BACKWARD");
                Ok("BACKWARD".to_owned())
            }
            401 | 403 => {
                warn!(subject, answer = %message_of(&answer.body), "schema registry: not allowed to set BACKWARD; the registry's rules apply");
                Ok(level)
            }
            _ => Err(Self::refused(format!("PUT {path}"), &answer)),
        }
    }

    /// Registers `kind`'s current schema under `subject` (an existing identical version answers
    /// with its id) with the subject's compatibility at least BACKWARD, and learns the id, so
    /// this process also reads what it writes.
    pub fn register_backward(&self, subject: &str, kind: RecordKind) -> Result<u32, RegistryError> {
        let compatibility = self.ensure_backward(subject)?;
        let path = format!("/subjects/{subject}/versions");
        let text = kind.schema_text();
        let answer = self.call("POST", &path, Some(&json!({"schema": text, "schemaType": "AVRO"})))?;
        let id = match answer.status {
            200 => answer.body["id"]
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| Self::refused(format!("POST {path} (no id in the answer)"), &answer))?,
            409 => {
                return Err(RegistryError::Incompatible {
                    subject: subject.to_owned(),
                    kind,
                    compatibility,
                    message: message_of(&answer.body),
                });
            }
            _ => return Err(Self::refused(format!("POST {path}"), &answer)),
        };
        omnistream_model::learn_schema(id, text)
            .map_err(|e| RegistryError::Settings(format!("the registry's id {id} for {subject}: {e}")))?;
        info!(subject, id, "schema registry: schema registered");
        Ok(id)
    }

    /// Fails when the URL answers but is not a Confluent-compatible API (`GET /subjects` is not
    /// a JSON list: a wrong path would otherwise answer 404 to every schema id, and every record
    /// of one would be refused); a registry that does not answer passes (it may come back).
    pub fn check_api(&self) -> Result<(), RegistryError> {
        match self.call("GET", "/subjects", None) {
            Ok(answer) if answer.status == 200 && answer.body.is_array() => Ok(()),
            Ok(answer) => Err(RegistryError::Settings(format!(
                "{} is not a Confluent-compatible schema registry API: GET /subjects answered {} {}",
                self.base,
                answer.status,
                message_of(&answer.body)
            ))),
            Err(error) => {
                warn!(%error, "the schema registry does not answer yet");
                Ok(())
            }
        }
    }

    /// The Avro text of schema `id`.
    pub fn schema_text(&self, id: u32) -> Result<String, RegistryError> {
        let path = format!("/schemas/ids/{id}");
        let answer = self.call("GET", &path, None)?;
        match answer.status {
            200 => answer.body["schema"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| Self::refused(format!("GET {path} (no schema in the answer)"), &answer)),
            404 => Err(RegistryError::NoSuchId { id }),
            _ => Err(Self::refused(format!("GET {path}"), &answer)),
        }
    }
}

/// A registry's error text (`{"error_code": …, "message": …}`), or the whole answer.
fn message_of(body: &Value) -> String {
    match body["message"].as_str() {
        Some(message) => message.to_owned(),
        None => body.to_string(),
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, RegistryError> {
    std::fs::read(path).map_err(|e| RegistryError::Settings(format!("{}: {e}", path.display())))
}

fn certificates(path: &std::path::Path) -> Result<Vec<Certificate<'static>>, RegistryError> {
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&read(path)?) {
        let item = item.map_err(|e| RegistryError::Settings(format!("{}: {e}", path.display())))?;
        if let PemItem::Certificate(certificate) = item {
            certificates.push(certificate);
        }
    }
    if certificates.is_empty() {
        return Err(RegistryError::Settings(format!("{} holds no PEM certificate", path.display())));
    }
    Ok(certificates)
}
