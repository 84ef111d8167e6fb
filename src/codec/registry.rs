//! A Confluent Schema Registry client: writer schemas by id
//! (`GET /schemas/ids/{id}`), cached for the life of the process (ids are
//! immutable). Ids and fingerprints known locally are answered without asking.

use super::DecodeError;
use super::wire::{LocalSchemas, SchemaLookup};
use apache_avro::Schema;
use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Registry {
    base: String,
    agent: ureq::Agent,
    local: LocalSchemas,
    cache: Mutex<FxHashMap<u32, Arc<Schema>>>,
}

#[derive(serde::Deserialize)]
struct SchemaResponse {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
}

impl Registry {
    pub fn new(base_url: &str, local: LocalSchemas) -> Registry {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        Registry {
            base: base_url.trim_end_matches('/').to_owned(),
            agent,
            local,
            cache: Mutex::new(FxHashMap::default()),
        }
    }

    fn fetch(&self, id: u32) -> Result<Option<Arc<Schema>>, DecodeError> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let mut resp = match self.agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::StatusCode(404)) => return Ok(None),
            Err(e) => return Err(DecodeError::Registry(format!("{url}: {e}"))),
        };
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| DecodeError::Registry(format!("{url}: unreadable answer: {e}")))?;
        let body: SchemaResponse = serde_json::from_str(&text)
            .map_err(|e| DecodeError::Registry(format!("{url}: not a schema answer: {e}")))?;
        if body.schema_type.as_deref().is_some_and(|t| t != "AVRO") {
            return Err(DecodeError::UnknownSchema(format!(
                "schema id {id} is not Avro"
            )));
        }
        let schema = Schema::parse_str(&body.schema).map_err(|e| {
            DecodeError::UnknownSchema(format!("schema id {id} does not parse: {e}"))
        })?;
        Ok(Some(Arc::new(schema)))
    }
}

impl SchemaLookup for Registry {
    fn by_id(&self, id: u32) -> Result<Option<Arc<Schema>>, DecodeError> {
        if let Some(s) = self.local.by_id(id)? {
            return Ok(Some(s));
        }
        if let Some(s) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(Some(Arc::clone(s)));
        }
        let found = self.fetch(id)?;
        if let Some(s) = &found {
            self.cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, Arc::clone(s));
        }
        Ok(found)
    }

    fn by_fingerprint(&self, fingerprint: &[u8; 8]) -> Option<Arc<Schema>> {
        self.local.by_fingerprint(fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{avro, wire};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A registry on loopback that knows id 42 and counts its requests.
    fn fake_registry() -> (String, Arc<AtomicUsize>) {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hits);
        std::thread::spawn(move || {
            for req in server.incoming_requests() {
                h.fetch_add(1, Ordering::SeqCst);
                let resp = if req.url() == "/schemas/ids/42" {
                    let body = serde_json::json!({"schema": avro::EVENT_AVSC}).to_string();
                    tiny_http::Response::from_string(body).with_status_code(200)
                } else if req.url() == "/schemas/ids/500" {
                    tiny_http::Response::from_string("boom").with_status_code(500)
                } else {
                    tiny_http::Response::from_string(
                        r#"{"error_code":40403,"message":"Schema not found"}"#,
                    )
                    .with_status_code(404)
                };
                let _ = req.respond(resp);
            }
        });
        (url, hits)
    }

    #[test]
    fn ids_are_fetched_once_unknown_ids_are_none_and_outages_are_errors() {
        let (url, hits) = fake_registry();
        let r = Registry::new(&url, LocalSchemas::ours().unwrap());
        let e = crate::generate::events(&crate::generate::Options::default(), 1)
            .remove(0)
            .event;
        let framed = wire::confluent(42, &avro::encode_event(&e).unwrap());
        assert_eq!(wire::decode_event(&framed, &r).unwrap(), e);
        assert_eq!(wire::decode_event(&framed, &r).unwrap(), e);
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "cached after the first look-up"
        );
        assert_eq!(
            wire::decode_event(&wire::confluent(7, b"x"), &r)
                .unwrap_err()
                .class(),
            "unknown_schema"
        );
        assert_eq!(
            wire::decode_event(&wire::confluent(500, b"x"), &r)
                .unwrap_err()
                .class(),
            "registry"
        );
        let down = Registry::new("http://127.0.0.1:9", LocalSchemas::ours().unwrap());
        assert_eq!(down.by_id(42).unwrap_err().class(), "registry");
    }
}
