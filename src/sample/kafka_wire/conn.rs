//! One connection to one broker: TCP (or TLS), `ApiVersions`, SASL, then framed
//! request/response calls, one at a time.
//!
//! Framing is Kafka's: a 4-byte big-endian size, then the header and body. Responses
//! come back in request order, one request is in flight per connection, and the
//! correlation id is checked, so a response can never be read as another's.
//!
//! Timeouts are the caller's (see `super::client`): a connection whose call was
//! abandoned is dropped, not reused.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::kafka_wire::{Mechanism, WireConfig};
use super::{sasl, tls, WireError};

/// Larger responses are refused before anything is allocated for them. A sample's
/// biggest answers (`ListGroups` of 100k groups, an `OffsetFetch` of a few hundred
/// groups) are a few MB.
pub const MAX_RESPONSE_BYTES: usize = 128 << 20;

/// A request this client sends, with its API key and response type.
pub trait Call: Encodable {
    const KEY: ApiKey;
    const NAME: &'static str;
    type Response: Decodable;
}

macro_rules! calls {
    ($($req:ty => $resp:ty, $key:ident;)*) => {$(
        impl Call for $req {
            const KEY: ApiKey = ApiKey::$key;
            const NAME: &'static str = stringify!($key);
            type Response = $resp;
        }
    )*};
}

calls! {
    ApiVersionsRequest => ApiVersionsResponse, ApiVersions;
    SaslHandshakeRequest => SaslHandshakeResponse, SaslHandshake;
    SaslAuthenticateRequest => SaslAuthenticateResponse, SaslAuthenticate;
    MetadataRequest => MetadataResponse, Metadata;
    ListGroupsRequest => ListGroupsResponse, ListGroups;
    FindCoordinatorRequest => FindCoordinatorResponse, FindCoordinator;
    OffsetFetchRequest => OffsetFetchResponse, OffsetFetch;
    DescribeGroupsRequest => DescribeGroupsResponse, DescribeGroups;
    ConsumerGroupDescribeRequest => ConsumerGroupDescribeResponse, ConsumerGroupDescribe;
    ListOffsetsRequest => ListOffsetsResponse, ListOffsets;
    // Not used by sampling: the benchmark commits its groups' offsets with it, and joins
    // classic groups as a member (JoinGroup, SyncGroup) to measure the description cache.
    OffsetCommitRequest => OffsetCommitResponse, OffsetCommit;
    JoinGroupRequest => JoinGroupResponse, JoinGroup;
    SyncGroupRequest => SyncGroupResponse, SyncGroup;
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An authenticated connection with negotiated API versions.
pub struct Conn {
    io: Box<dyn Io>,
    broker: String,
    correlation: i32,
    client_id: StrBytes,
    /// Broker's (min, max) version per API key.
    versions: HashMap<i16, (i16, i16)>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("broker", &self.broker).finish_non_exhaustive()
    }
}

/// Calls sent, by API name (the benchmark reads these).
pub type Counter<'a> = dyn Fn(&'static str) + Send + Sync + 'a;

impl Conn {
    /// Connects, negotiates versions and authenticates. `tls` is the prepared rustls
    /// configuration when the cluster uses TLS.
    pub async fn connect(addr: &str, cfg: &WireConfig, tls: Option<&Arc<rustls::ClientConfig>>, count: &Counter<'_>) -> Result<Conn, WireError> {
        let transport = |e: std::io::Error| WireError::Transport { broker: addr.to_string(), message: e.to_string() };
        let tcp = TcpStream::connect(addr).await.map_err(transport)?;
        tcp.set_nodelay(true).map_err(transport)?;
        let io: Box<dyn Io> = match tls {
            Some(config) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
                let name = tls::server_name(host)?;
                let stream = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await.map_err(transport)?;
                Box::new(stream)
            }
            None => Box::new(tcp),
        };
        let mut conn = Conn { io, broker: addr.to_string(), correlation: 0, client_id: StrBytes::from_string(cfg.client_id.clone()), versions: HashMap::new() };
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str("streamguard");
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        count(ApiVersionsRequest::NAME);
        // Brokers older than 2.4 answer v3 with a v0 error: they are too old for
        // OffsetFetch v8 anyway, so the caller falls back to librdkafka.
        let resp = conn.call(&req, 3).await.map_err(|e| match e {
            WireError::Protocol { .. } => WireError::Unsupported { api: "ApiVersions", need: 3, has: 0 },
            other => other,
        })?;
        if resp.error_code != 0 {
            return Err(WireError::kafka("ApiVersions", resp.error_code));
        }
        conn.versions = resp.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        if let Some(s) = &cfg.sasl {
            conn.authenticate(s.mechanism, &s.username, &s.password, count).await?;
        }
        Ok(conn)
    }

    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// The version to use for `key`: the highest both sides support up to `max`; an
    /// error when the broker's highest is below `min`.
    pub fn version(&self, key: ApiKey, name: &'static str, min: i16, max: i16) -> Result<i16, WireError> {
        let (bmin, bmax) = self.versions.get(&(key as i16)).copied().unwrap_or((0, -1));
        let v = bmax.min(max);
        if v < min || v < bmin {
            return Err(WireError::Unsupported { api: name, need: min, has: bmax });
        }
        Ok(v)
    }

    async fn authenticate(&mut self, mechanism: Mechanism, user: &str, password: &str, count: &Counter<'_>) -> Result<(), WireError> {
        let broker = self.broker.clone();
        let fail = move |message: String| WireError::Auth { broker: broker.clone(), mechanism: mechanism.as_str(), message };
        let mut hs = SaslHandshakeRequest::default();
        hs.mechanism = StrBytes::from_static_str(mechanism.as_str());
        let v = self.version(ApiKey::SaslHandshake, "SaslHandshake", 1, 1)?;
        count(SaslHandshakeRequest::NAME);
        let resp = self.call(&hs, v).await?;
        if resp.error_code != 0 {
            let offered: Vec<&str> = resp.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(fail(format!("{} (broker offers {offered:?})", WireError::kafka("SaslHandshake", resp.error_code))));
        }
        let auth_v = self.version(ApiKey::SaslAuthenticate, "SaslAuthenticate", 0, 2)?;
        match sasl::Scram::new(mechanism, user, password, sasl::nonce().map_err(&fail)?) {
            None => {
                self.sasl_round(sasl::plain(user, password), auth_v, count).await.map_err(&fail)?;
            }
            Some(scram) => {
                let server_first = self.sasl_round(scram.first(), auth_v, count).await.map_err(&fail)?;
                let (client_final, expect) = scram.respond(&server_first).map_err(&fail)?;
                let server_final = self.sasl_round(client_final, auth_v, count).await.map_err(&fail)?;
                expect.verify(&server_final).map_err(fail)?;
            }
        }
        Ok(())
    }

    /// One SaslAuthenticate round; a refusal comes back as the broker's words.
    async fn sasl_round(&mut self, bytes: Vec<u8>, version: i16, count: &Counter<'_>) -> Result<Bytes, String> {
        let mut req = SaslAuthenticateRequest::default();
        req.auth_bytes = Bytes::from(bytes);
        count(SaslAuthenticateRequest::NAME);
        let resp = self.call(&req, version).await.map_err(|e| e.to_string())?;
        if resp.error_code != 0 {
            let msg = resp.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
            return Err(format!("{}: {msg}", WireError::kafka("SaslAuthenticate", resp.error_code)));
        }
        Ok(resp.auth_bytes)
    }

    /// Sends one request and reads its response.
    pub async fn call<R: Call>(&mut self, req: &R, version: i16) -> Result<R::Response, WireError> {
        let op = R::NAME;
        let bad = |message: String| WireError::Protocol { op, message };
        self.correlation = self.correlation.wrapping_add(1);
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY as i16;
        header.request_api_version = version;
        header.correlation_id = self.correlation;
        header.client_id = Some(self.client_id.clone());
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        header.encode(&mut buf, R::KEY.request_header_version(version)).map_err(|e| bad(e.to_string()))?;
        req.encode(&mut buf, version).map_err(|e| bad(e.to_string()))?;
        let size = i32::try_from(buf.len() - 4).map_err(|_| bad("request too large".into()))?;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        let transport = |e: std::io::Error| WireError::Transport { broker: self.broker.clone(), message: e.to_string() };
        self.io.write_all(&buf).await.map_err(transport)?;
        self.io.flush().await.map_err(transport)?;
        let mut len = [0u8; 4];
        self.io.read_exact(&mut len).await.map_err(transport)?;
        let len = i32::from_be_bytes(len);
        let len = usize::try_from(len).ok().filter(|l| *l <= MAX_RESPONSE_BYTES).ok_or_else(|| bad(format!("response size {len} out of bounds")))?;
        let mut body = vec![0u8; len];
        self.io.read_exact(&mut body).await.map_err(transport)?;
        let mut body = Bytes::from(body);
        let rh = ResponseHeader::decode(&mut body, R::KEY.response_header_version(version)).map_err(|e| bad(e.to_string()))?;
        if rh.correlation_id != self.correlation {
            return Err(bad(format!("correlation id {} (expected {})", rh.correlation_id, self.correlation)));
        }
        let resp = R::Response::decode(&mut body, version).map_err(|e| bad(e.to_string()))?;
        if body.has_remaining() {
            tracing::debug!(op, left = body.remaining(), "response has trailing bytes");
        }
        Ok(resp)
    }
}
