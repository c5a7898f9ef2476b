//! The WHIP and WHEP client's HTTP exchanges: one HTTP/1.1 request per
//! connection (a session makes a handful), over TCP or rustls.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use url::Url;

use super::link::{ice_servers, LinkServer};
use super::{SDP, SDPFRAG};

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Redirects (307/308) followed for one request.
const MAX_REDIRECTS: usize = 5;

/// Largest response body read: an SDP answer is a few kilobytes.
const MAX_BODY: usize = 1 << 20;

/// Bytes of a server's error body quoted in a message.
const QUOTED: usize = 200;

/// Which protocol an endpoint speaks: the exchanges are the same, the
/// words and flags a user is pointed to are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Publishing (`p2p send --whip`).
    Whip,
    /// Watching (`p2p receive --whep`).
    Whep,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Whip => "WHIP",
            Self::Whep => "WHEP",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Self::Whip => "--whip",
            Self::Whep => "--whep",
        }
    }

    fn token_flag(self) -> &'static str {
        match self {
            Self::Whip => "--whip-token (or P2P_WHIP_TOKEN)",
            Self::Whep => "--whep-token (or P2P_WHEP_TOKEN)",
        }
    }
}

/// Talks to one WHIP or WHEP endpoint.
pub struct Client {
    kind: Kind,
    endpoint: Url,
    token: Option<String>,
    ca_file: Option<PathBuf>,
    tls: OnceLock<Arc<rustls::ClientConfig>>,
}

/// What the endpoint said to our offer: the session it made.
#[derive(Debug, Clone)]
pub struct Created {
    /// Where the session lives (`Location`, resolved): PATCH and DELETE go
    /// here.
    pub resource: Url,
    /// The answer.
    pub answer: String,
    /// `ETag`: names this ICE session in PATCH requests (`If-Match`).
    pub etag: Option<String>,
    /// The endpoint takes trickled candidates (`Accept-Patch`).
    pub trickle: bool,
    /// ICE servers it offers (`Link: rel="ice-server"`).
    pub ice_servers: Vec<LinkServer>,
}

/// One response, read whole.
struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// The URL that answered (after redirects).
    url: Url,
}

impl Client {
    /// A client for `endpoint` (http:// or https://). `token` goes in
    /// `Authorization: Bearer`; `ca_file` adds trust for https.
    pub fn new(
        kind: Kind,
        endpoint: &str,
        token: Option<String>,
        ca_file: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let flag = kind.flag();
        let endpoint = Url::parse(endpoint).map_err(|e| {
            anyhow::anyhow!("bad {flag} URL {endpoint:?}: {e}; expected http(s)://HOST[:PORT]/PATH")
        })?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            bail!("bad {flag} URL {endpoint}: expected http(s)://HOST[:PORT]/PATH");
        }
        Ok(Self {
            kind,
            endpoint,
            token: token.filter(|t| !t.is_empty()),
            ca_file,
            tls: OnceLock::new(),
        })
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// ICE servers the endpoint names before any offer (`OPTIONS`, which
    /// some servers answer with `Link` headers); none when it does not.
    pub async fn preflight(&self) -> Vec<LinkServer> {
        let asked = self.request(Method::OPTIONS, &self.endpoint, &[], Bytes::new());
        match tokio::time::timeout(Duration::from_secs(1), asked).await {
            Ok(Ok(r)) if r.status.is_success() => ice_servers(&r.headers),
            Ok(Ok(_)) | Err(_) => Vec::new(),
            Ok(Err(e)) => {
                tracing::debug!("{} OPTIONS: {e:#}", self.kind.name());
                Vec::new()
            }
        }
    }

    /// POSTs the offer; the session the endpoint made, or why not.
    pub async fn post_offer(&self, offer: &str) -> anyhow::Result<Created> {
        let headers = [(header::CONTENT_TYPE, SDP), (header::ACCEPT, SDP)];
        let body = Bytes::from(crlf(offer));
        let r = self
            .request(Method::POST, &self.endpoint, &headers, body)
            .await?;
        if !r.status.is_success() {
            bail!("{}", self.refusal(&r));
        }
        let Some(location) = header_str(&r.headers, header::LOCATION) else {
            bail!(
                "the {} endpoint {} answered {} without a Location: the session could not be \
                 ended, so it is not used (the server is not RFC 9725 compliant)",
                self.kind.name(),
                self.endpoint,
                r.status
            );
        };
        let resource = r.url.join(location).with_context(|| {
            let name = self.kind.name();
            format!("the {name} endpoint gave a bad Location {location:?}")
        })?;
        let answer = String::from_utf8_lossy(&r.body).into_owned();
        if !answer.trim_start().starts_with("v=") {
            // The session exists on the server: end it.
            let _ = self.delete(&resource).await;
            bail!(
                "the {} endpoint {} answered {} with no SDP answer (body: {:?})",
                self.kind.name(),
                self.endpoint,
                r.status,
                quote(&r.body)
            );
        }
        let trickle = r
            .headers
            .get_all("accept-patch")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(SDPFRAG));
        Ok(Created {
            resource,
            answer,
            etag: header_str(&r.headers, header::ETAG).map(str::to_owned),
            trickle,
            ice_servers: ice_servers(&r.headers),
        })
    }

    /// PATCHes a fragment (candidates) to the session. `Ok(false)`: the
    /// server does not take trickled candidates, send no more.
    pub async fn trickle(&self, session: &Created, fragment: &str) -> anyhow::Result<bool> {
        // Without an ETag, no If-Match: `*` would ask for an ICE restart.
        let mut headers = vec![(header::CONTENT_TYPE, SDPFRAG)];
        if let Some(etag) = session.etag.as_deref() {
            headers.push((header::IF_MATCH, etag));
        }
        let body = Bytes::from(crlf(fragment));
        let r = self
            .request(Method::PATCH, &session.resource, &headers, body)
            .await?;
        match r.status.as_u16() {
            200..=299 => Ok(true),
            405 | 501 => Ok(false),
            _ => bail!("{}", self.refusal(&r)),
        }
    }

    /// Ends the session. A session the server no longer knows is ended.
    pub async fn delete(&self, resource: &Url) -> anyhow::Result<()> {
        let r = self
            .request(Method::DELETE, resource, &[], Bytes::new())
            .await?;
        if r.status.is_success() || r.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            bail!("{}", self.refusal(&r))
        }
    }

    /// A one-line message for a refused request: what the status means for
    /// a user, and the server's own words.
    fn refusal(&self, r: &Response) -> String {
        let status = r.status.as_u16();
        let said = quote(&r.body);
        let said = if said.is_empty() {
            String::new()
        } else {
            format!(" (the server said: {said})")
        };
        let url = &r.url;
        let (name, token) = (self.kind.name(), self.kind.token_flag());
        match status {
            401 | 403 if self.token.is_none() => {
                format!("the {name} endpoint {url} wants a token ({status}): pass {token}{said}")
            }
            401 | 403 => {
                format!(
                    "the {name} endpoint {url} refused the token ({status}): check {token}{said}"
                )
            }
            404 => format!(
                "no {name} endpoint at {url} (404): check the URL; some servers need the endpoint \
                 created first{said}"
            ),
            406 | 415 => format!(
                "the {name} endpoint {url} does not take {SDP} ({status}): it may not be a \
                 {name} endpoint{said}"
            ),
            409 if self.kind == Kind::Whip => format!(
                "the WHIP endpoint {url} is busy: another publisher holds it (409); stop that one \
                 or use another endpoint{said}"
            ),
            503 => {
                let after = header_str(&r.headers, header::RETRY_AFTER)
                    .map(|s| format!(", retry after {s} s"))
                    .unwrap_or_default();
                format!("the {name} endpoint {url} is unavailable (503{after}){said}")
            }
            400 => format!("the {name} endpoint {url} refused our SDP as malformed (400){said}"),
            _ => format!("the {name} endpoint {url} answered {}{said}", r.status),
        }
    }

    /// One request and its whole response, following redirects that keep
    /// the method (307, 308).
    async fn request(
        &self,
        method: Method,
        url: &Url,
        headers: &[(header::HeaderName, &str)],
        body: Bytes,
    ) -> anyhow::Result<Response> {
        let mut url = url.clone();
        let origin = url.origin();
        for _ in 0..=MAX_REDIRECTS {
            let what = format!("{} {method} {url}", self.kind.name());
            // The token goes only where it was meant to.
            let token = if url.origin() == origin {
                self.token.as_deref()
            } else {
                None
            };
            let exchange = self.exchange(&method, &url, headers, body.clone(), token);
            let r = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                .await
                .map_err(|_| anyhow::anyhow!("{what}: no answer within {REQUEST_TIMEOUT:?}"))?
                .with_context(|| what.clone())?;
            tracing::debug!("{what}: {}", r.0);
            let (status, headers, body) = r;
            if matches!(status.as_u16(), 307 | 308) {
                if let Some(to) = header_str(&headers, header::LOCATION) {
                    let next = url
                        .join(to)
                        .with_context(|| format!("{what}: bad redirect {to:?}"))?;
                    if url.scheme() == "https" && next.scheme() != "https" {
                        bail!("{what}: refused a redirect from https to {next}");
                    }
                    url = next;
                    continue;
                }
            }
            return Ok(Response {
                status,
                headers,
                body,
                url,
            });
        }
        bail!(
            "{} {method}: more than {MAX_REDIRECTS} redirects",
            self.kind.name()
        )
    }

    async fn exchange(
        &self,
        method: &Method,
        url: &Url,
        headers: &[(header::HeaderName, &str)],
        body: Bytes,
        token: Option<&str>,
    ) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
        let host = url.host_str().context("no host in the URL")?;
        let port = url.port_or_known_default().unwrap_or(80);
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&url[url::Position::BeforePath..url::Position::AfterQuery])
            .header(header::HOST, authority)
            .header(
                header::USER_AGENT,
                concat!("p2p/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            req = req.header(name, *value);
        }
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).with_context(|| {
                let flag = self.kind.token_flag();
                format!("{flag} has characters a header cannot carry")
            })?;
            req = req.header(header::AUTHORIZATION, value);
        }
        let req = req.body(Full::new(body))?;
        let tcp = tokio::net::TcpStream::connect(format!("{host}:{port}"))
            .await
            .with_context(|| format!("cannot connect to {host}:{port}"))?;
        let _ = tcp.set_nodelay(true);
        if url.scheme() == "https" {
            let name = match url.host() {
                Some(url::Host::Domain(d)) => rustls_pki_types::ServerName::try_from(d.to_owned())?,
                Some(url::Host::Ipv4(ip)) => {
                    rustls_pki_types::ServerName::from(std::net::IpAddr::V4(ip))
                }
                Some(url::Host::Ipv6(ip)) => {
                    rustls_pki_types::ServerName::from(std::net::IpAddr::V6(ip))
                }
                None => bail!("no host in the URL"),
            };
            let tls = tokio_rustls::TlsConnector::from(self.tls_config()?)
                .connect(name, tcp)
                .await
                .context("TLS handshake failed (--ca-file trusts a self-signed certificate)")?;
            roundtrip(hyper_util::rt::TokioIo::new(tls), req).await
        } else {
            roundtrip(hyper_util::rt::TokioIo::new(tcp), req).await
        }
    }

    fn tls_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        if let Some(c) = self.tls.get() {
            return Ok(c.clone());
        }
        let config =
            crate::tls::client_config(self.ca_file.as_deref()).map_err(anyhow::Error::msg)?;
        Ok(self.tls.get_or_init(|| config).clone())
    }
}

async fn roundtrip<T>(
    io: T,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let conn = tokio::spawn(conn);
    let res = sender.send_request(req).await?;
    let (parts, body) = res.into_parts();
    let body = http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes();
    conn.abort();
    Ok((parts.status, parts.headers, body))
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The first line of a server's body, shortened, for a message.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    match line.char_indices().nth(QUOTED) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_owned(),
    }
}

/// SDP with CRLF line ends, as RFC 8866 writes it (some servers parse
/// nothing else).
fn crlf(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.lines() {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_is_sent_with_crlf_line_ends() {
        assert_eq!(
            crlf("v=0\no=- 1 1 IN IP4 0.0.0.0\r\ns=-"),
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\n"
        );
    }

    #[test]
    fn a_server_body_is_quoted_by_its_first_line_and_shortened() {
        assert_eq!(quote(b"\n  Endpoint busy \nmore"), "Endpoint busy");
        let long = "x".repeat(500);
        assert_eq!(quote(long.as_bytes()).chars().count(), QUOTED + 1);
        assert_eq!(quote(b""), "");
    }

    #[test]
    fn only_http_urls_with_a_host_are_endpoints() {
        assert!(Client::new(
            Kind::Whip,
            "http://127.0.0.1:8080/whip/endpoint/a",
            None,
            None
        )
        .is_ok());
        for bad in ["ws://127.0.0.1/whip", "127.0.0.1:8080", "http://"] {
            let e = Client::new(Kind::Whip, bad, None, None)
                .err()
                .expect(bad)
                .to_string();
            assert!(e.contains("--whip"), "{e}");
        }
    }
}
