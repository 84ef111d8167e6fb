//! A Confluent Schema Registry client on the runtime: writer schemas by id
//! (`GET /schemas/ids/{id}`), cached for the life of the process (ids are
//! immutable), unknown ids remembered for a while (a negative cache), ids
//! and fingerprints known locally answered without asking.
//!
//! Decoding never waits on the network: `SchemaLookup::by_id` answers from
//! what is known, or says `DecodeError::Pending`; the daemon then holds the
//! partition whose record waits and calls [`Registry::fetch`] on the
//! runtime, with backoff, while the other partitions flow.
//!
//! TLS through rustls with the system's roots or a CA file; basic auth or a
//! bearer token from the settings file or the environment; a timeout per
//! request. Credentials never appear in a log line or an error: URLs are
//! shown without them (`RegistrySettings::display_url`).

use super::DecodeError;
use super::wire::{LocalSchemas, SchemaLookup, Writer};
use crate::config::{RegistryAuth, RegistrySettings};
use rustc_hash::FxHashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// What is known of an id.
enum Known {
    Schema(Arc<Writer>),
    /// Parsed, but not one our reader schemas can resolve, or recursive
    /// (a type that contains itself: decoding it nests without bound):
    /// its records are dead letters (`foreign_schema`), for good.
    Refused,
    /// The registry said it has no such id (or it is not an Avro schema that
    /// parses), at this instant: records naming it are dead letters until
    /// the entry expires and the registry is asked again.
    Missing(Instant),
}

/// The largest schema answer read: our own schemas are a few KB.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

pub struct Registry {
    settings: RegistrySettings,
    client: reqwest::Client,
    local: LocalSchemas,
    known: RwLock<FxHashMap<u32, Known>>,
}

/// Why a fetch failed for now (the record waits and the fetch is tried
/// again): the registry unreachable, slow, or answering 5xx. Free of
/// credentials.
#[derive(Debug, Clone, thiserror::Error)]
#[error("schema registry {url}: {message}")]
pub struct FetchError {
    pub url: String,
    pub message: String,
}

#[derive(serde::Deserialize)]
struct SchemaResponse {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
}

/// An error and its causes, one after the other ("error sending request:
/// ... invalid peer certificate: UnknownIssuer"): reqwest's own text alone
/// leaves out why. The URL is not in it (`without_url`).
fn causes(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

impl Registry {
    /// A client for `settings`; fails on a CA file that cannot be read or
    /// holds no certificate.
    pub fn new(settings: RegistrySettings, local: LocalSchemas) -> Result<Registry, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("shareaudit/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("schema registry CA file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("schema registry CA file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "schema registry CA file {}: no certificate in it",
                    path.display()
                ));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("schema registry client: {e}"))?;
        Ok(Registry {
            settings,
            client,
            local,
            known: RwLock::new(FxHashMap::default()),
        })
    }

    fn url(&self, id: u32) -> String {
        format!(
            "{}/schemas/ids/{id}",
            self.settings.url.trim_end_matches('/')
        )
    }

    /// Asks the registry for `id` once and records the answer: the schema,
    /// or that it is missing. `Err`: no answer this time (retry later).
    pub async fn fetch(&self, id: u32) -> Result<(), FetchError> {
        let shown = format!(
            "{}/schemas/ids/{id}",
            self.settings.display_url().trim_end_matches('/')
        );
        let fail = |message: String| FetchError {
            url: shown.clone(),
            message,
        };
        let mut req = self
            .client
            .get(self.url(id))
            .header("Accept", "application/vnd.schemaregistry.v1+json");
        req = match &self.settings.auth {
            Some(RegistryAuth::Basic { username, password }) => {
                req.basic_auth(username, Some(password))
            }
            Some(RegistryAuth::Bearer(token)) => req.bearer_auth(token),
            None => req,
        };
        // Errors leave the URL out: the display URL is named instead.
        let resp = req
            .send()
            .await
            .map_err(|e| fail(causes(&e.without_url())))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            self.remember(id, Known::Missing(Instant::now()));
            return Ok(());
        }
        if !status.is_success() {
            return Err(fail(format!("answered {status}")));
        }
        // Read in chunks up to a bound: a registry's answer is data from outside too.
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| fail(format!("unreadable answer: {}", causes(&e.without_url()))))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                tracing::warn!(
                    id,
                    limit = MAX_ANSWER_BYTES,
                    "schema answer too large; its records are dead letters (foreign_schema)"
                );
                self.remember(id, Known::Refused);
                return Ok(());
            }
            body.extend_from_slice(&chunk);
        }
        let answer: SchemaResponse = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) => return Err(fail(format!("not a schema answer: {e}"))),
        };
        let known = if answer.schema_type.as_deref().is_some_and(|t| t != "AVRO") {
            tracing::warn!(
                id,
                "writer schema is not Avro; its records are dead letters"
            );
            Known::Missing(Instant::now())
        } else {
            match super::avro::parse_schema(&answer.schema) {
                Ok(s) => match super::avro::usable_writer(&s) {
                    Ok(()) => Known::Schema(Arc::new(Writer::new(s))),
                    Err(why) => {
                        tracing::warn!(
                            id,
                            why,
                            "writer schema refused; its records are dead letters (foreign_schema)"
                        );
                        Known::Refused
                    }
                },
                Err(e) => {
                    tracing::warn!(id, error = %e, "writer schema does not parse; its records are dead letters");
                    Known::Missing(Instant::now())
                }
            }
        };
        self.remember(id, known);
        Ok(())
    }

    fn remember(&self, id: u32, known: Known) {
        self.known
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, known);
    }
}

impl SchemaLookup for Registry {
    fn by_id(&self, id: u32) -> Result<Option<Arc<Writer>>, DecodeError> {
        if let Some(s) = self.local.by_id(id)? {
            return Ok(Some(s));
        }
        match self
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            Some(Known::Schema(s)) => Ok(Some(Arc::clone(s))),
            Some(Known::Refused) => Err(DecodeError::ForeignSchema(id)),
            Some(Known::Missing(at)) if at.elapsed() < self.settings.unknown_id_ttl => Ok(None),
            _ => Err(DecodeError::Pending(id)),
        }
    }

    fn by_fingerprint(&self, fingerprint: &[u8; 8]) -> Option<Arc<Writer>> {
        self.local.by_fingerprint(fingerprint)
    }
}

/// Fetches `id` until the registry answers (or `stop` is cancelled), with
/// a delay that doubles from 200 ms to 30 s between tries. Each failure is
/// counted by `failed`.
pub async fn fetch_until_answered(
    registry: &Registry,
    id: u32,
    stop: &tokio_util::sync::CancellationToken,
    mut failed: impl FnMut(&FetchError, u32),
) -> bool {
    let mut delay = Duration::from_millis(200);
    let mut tries = 0u32;
    loop {
        match registry.fetch(id).await {
            Ok(()) => return true,
            Err(e) => {
                tries += 1;
                failed(&e, tries);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{avro, wire};
    use crate::config::{RawSettings, Settings};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A registry on loopback that knows id 42, fails id 500, and records
    /// the requests it gets (path, Authorization header).
    fn fake_registry() -> (String, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let auth = Arc::new(Mutex::new(Vec::new()));
        let (h, a) = (Arc::clone(&hits), Arc::clone(&auth));
        std::thread::spawn(move || {
            for req in server.incoming_requests() {
                h.fetch_add(1, Ordering::SeqCst);
                let header = req
                    .headers()
                    .iter()
                    .find(|x| x.field.equiv("Authorization"))
                    .map(|x| x.value.to_string())
                    .unwrap_or_default();
                a.lock().unwrap().push(header);
                let resp = match req.url() {
                    "/schemas/ids/42" => {
                        let body = serde_json::json!({"schema": avro::EVENT_AVSC}).to_string();
                        tiny_http::Response::from_string(body).with_status_code(200)
                    }
                    "/schemas/ids/43" => tiny_http::Response::from_string(
                        serde_json::json!({"schema": "{}", "schemaType": "PROTOBUF"}).to_string(),
                    )
                    .with_status_code(200),
                    "/schemas/ids/46" => {
                        tiny_http::Response::from_string("x".repeat(MAX_ANSWER_BYTES + 1))
                            .with_status_code(200)
                    }
                    "/schemas/ids/500" => {
                        tiny_http::Response::from_string("boom").with_status_code(500)
                    }
                    _ => tiny_http::Response::from_string(
                        r#"{"error_code":40403,"message":"Schema not found"}"#,
                    )
                    .with_status_code(404),
                };
                let _ = req.respond(resp);
            }
        });
        (url, hits, auth)
    }

    fn settings(url: &str, extra: RawSettings) -> RegistrySettings {
        Settings::from_raw(RawSettings {
            brokers: Some("127.0.0.1:9".into()),
            schema_registry_url: Some(url.to_owned()),
            ..extra
        })
        .unwrap()
        .schema_registry
        .unwrap()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn lookups_never_wait_fetches_are_cached_unknown_ids_remembered_for_a_while() {
        let (url, hits, _) = fake_registry();
        let raw = RawSettings {
            schema_registry_unknown_ttl_ms: Some(200),
            ..RawSettings::default()
        };
        let r = Registry::new(settings(&url, raw), LocalSchemas::ours().unwrap()).unwrap();
        let e = crate::demo::generate::events(&crate::demo::generate::Options::default(), 1)
            .remove(0)
            .event;
        let framed = wire::confluent(42, &avro::encode_event(&e).unwrap());
        // Not known yet: the decoder says so at once, nobody was asked.
        assert!(matches!(
            wire::decode_event(&framed, &r),
            Err(DecodeError::Pending(42))
        ));
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        block_on(r.fetch(42)).unwrap();
        assert_eq!(wire::decode_event(&framed, &r).unwrap(), e);
        assert_eq!(wire::decode_event(&framed, &r).unwrap(), e);
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "cached after the first fetch"
        );

        // An id the registry does not know: a dead letter, without asking again...
        block_on(r.fetch(7)).unwrap();
        let unknown = wire::decode_event(&wire::confluent(7, b"x"), &r).unwrap_err();
        assert_eq!(unknown.class(), "unknown_schema");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        // ...until the negative entry expires.
        std::thread::sleep(Duration::from_millis(250));
        assert!(matches!(
            wire::decode_event(&wire::confluent(7, b"x"), &r),
            Err(DecodeError::Pending(7))
        ));
        // A schema that is not Avro is refused like an unknown one.
        block_on(r.fetch(43)).unwrap();
        assert_eq!(
            wire::decode_event(&wire::confluent(43, b"x"), &r)
                .unwrap_err()
                .class(),
            "unknown_schema"
        );
        // An answer past the bound is not read whole: the id is refused.
        block_on(r.fetch(46)).unwrap();
        assert_eq!(
            wire::decode_event(&wire::confluent(46, b"x"), &r)
                .unwrap_err()
                .class(),
            "foreign_schema"
        );
        // A registry in trouble: no answer, the record waits.
        assert!(block_on(r.fetch(500)).is_err());
        assert!(matches!(
            wire::decode_event(&wire::confluent(500, b"x"), &r),
            Err(DecodeError::Pending(500))
        ));
        let down = Registry::new(
            settings("http://127.0.0.1:9", RawSettings::default()),
            LocalSchemas::ours().unwrap(),
        )
        .unwrap();
        assert!(block_on(down.fetch(42)).is_err());
    }

    #[test]
    fn credentials_are_sent_and_never_shown() {
        let (url, _, auth) = fake_registry();
        let with_user = url.replace("http://", "http://reader:s3cret-pw@");
        let s = settings(&with_user, RawSettings::default());
        assert_eq!(s.display_url(), url, "the URL keeps no credentials");
        assert!(!format!("{s:?}").contains("s3cret-pw"));
        let r = Registry::new(s, LocalSchemas::ours().unwrap()).unwrap();
        let err = block_on(r.fetch(500)).unwrap_err().to_string();
        assert!(!err.contains("s3cret-pw"), "{err}");
        assert!(auth.lock().unwrap()[0].starts_with("Basic "));

        let token = settings(
            &url,
            RawSettings {
                schema_registry_token: Some("tok-123".into()),
                ..RawSettings::default()
            },
        );
        let r = Registry::new(token, LocalSchemas::ours().unwrap()).unwrap();
        block_on(r.fetch(42)).unwrap();
        assert_eq!(auth.lock().unwrap()[1], "Bearer tok-123");
    }

    /// A fake registry behind TLS, its certificate (for localhost and
    /// 127.0.0.1) signed by `tests/fixtures/tls/ca.pem`. Answers every
    /// request with our event schema; records each Authorization header.
    fn tls_registry() -> (String, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let dir = tls_dir();
        let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        // ring, as reqwest's client here (deprecated in rustls for lacking post-quantum key exchange).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let auth = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&auth);
        std::thread::spawn(move || {
            block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    // A client that does not trust the certificate ends here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        continue;
                    };
                    let mut request = Vec::new();
                    let mut buf = [0; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request).into_owned();
                    let header = text
                        .lines()
                        .find_map(|l| l.strip_prefix("authorization: "))
                        .unwrap_or_default();
                    seen.lock().unwrap().push(header.to_owned());
                    let body = serde_json::json!({"schema": avro::EVENT_AVSC}).to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.schemaregistry.v1+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            })
        });
        (format!("https://localhost:{port}"), auth)
    }

    fn tls_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls")
    }

    #[test]
    fn an_https_registry_is_trusted_through_the_ca_file_and_only_through_it() {
        let (url, auth) = tls_registry();
        // Not trusted by the system's roots: refused, and the error says why.
        let r = Registry::new(
            settings(&url, RawSettings::default()),
            LocalSchemas::ours().unwrap(),
        )
        .unwrap();
        let err = block_on(r.fetch(42)).unwrap_err().to_string();
        assert!(err.contains("certificate"), "{err}");
        assert!(auth.lock().unwrap().is_empty(), "nothing was sent");
        // Trusted through the CA file, with basic auth over it.
        let with_ca = RawSettings {
            schema_registry_ca_file: Some(tls_dir().join("ca.pem")),
            ..RawSettings::default()
        };
        let s = settings(
            &url.replace("https://", "https://reader:s3cret-pw@"),
            with_ca,
        );
        let r = Registry::new(s, LocalSchemas::ours().unwrap()).unwrap();
        block_on(r.fetch(42)).unwrap();
        let e = crate::demo::generate::events(&crate::demo::generate::Options::default(), 1)
            .remove(0)
            .event;
        let framed = wire::confluent(42, &avro::encode_event(&e).unwrap());
        assert_eq!(
            wire::decode_event(&framed, &r).unwrap().event_id,
            e.event_id
        );
        let sent = auth.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].starts_with("Basic "), "{sent:?}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let s = settings(
            "https://registry:8081",
            RawSettings {
                schema_registry_ca_file: Some(ca),
                ..RawSettings::default()
            },
        );
        assert!(Registry::new(s, LocalSchemas::ours().unwrap()).is_err());
    }

    #[test]
    fn recursive_and_foreign_writer_schemas_are_refused_ours_taken() {
        let parse = |t: &str| apache_avro::Schema::parse_str(t).unwrap();
        let nested =
            parse(r#"{"type":"record","name":"N","fields":[{"name":"next","type":["null","N"]}]}"#);
        assert!(
            avro::usable_writer(&nested)
                .unwrap_err()
                .starts_with("recursive")
        );
        let deep = parse(
            r#"{"type":"record","name":"A","fields":[{"name":"xs","type":{"type":"array","items":{"type":"record","name":"B","fields":[{"name":"up","type":["null","A"]}]}}}]}"#,
        );
        assert!(
            avro::usable_writer(&deep)
                .unwrap_err()
                .starts_with("recursive")
        );
        let reuse = parse(
            r#"{"type":"record","name":"P","fields":[{"name":"a","type":{"type":"record","name":"Q","fields":[]}},{"name":"b","type":"Q"}]}"#,
        );
        assert!(
            avro::usable_writer(&reuse)
                .unwrap_err()
                .starts_with("foreign"),
            "a named type used twice is not recursive (only foreign)"
        );
        let foreign = parse(r#"{"type":"record","name":"X","fields":[{"name":"a","type":"int"}]}"#);
        assert!(
            avro::usable_writer(&foreign)
                .unwrap_err()
                .starts_with("foreign")
        );
        let ours = avro::schemas().unwrap();
        assert_eq!(avro::usable_writer(&ours.event), Ok(()));
        assert_eq!(avro::usable_writer(&ours.consent), Ok(()));
    }
}
