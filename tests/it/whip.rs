//! `p2p send --whip` against a WHIP endpoint faked in the test (axum on
//! 127.0.0.1): what the client sends (RFC 9725: content types, CRLF SDP,
//! the token, Location resolved, ETag, trickle by PATCH, DELETE on
//! Ctrl-C), ICE servers from `Link` headers, and the one-line message for
//! each refusal. The endpoint answers with an SDP made from the offer, so
//! ICE never completes; publishing into a real SFU is `whip_janus.rs`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::harness::{Proc, Spawn, WAIT};

/// One request the fake endpoint got.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: String,
    from: SocketAddr,
}

/// How the fake endpoint answers a POST.
#[derive(Clone)]
struct Behaviour {
    status: u16,
    /// None: no Location header.
    location: Option<&'static str>,
    body: &'static str,
    extra: Vec<(&'static str, String)>,
    reject_video: bool,
    /// `Link` headers on OPTIONS.
    options_links: Vec<String>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            status: 201,
            location: Some("../resource/1"),
            body: "",
            extra: vec![],
            reject_video: false,
            options_links: vec![],
        }
    }
}

#[derive(Clone)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    behaviour: Behaviour,
}

impl Fake {
    async fn start(behaviour: Behaviour) -> (Self, String) {
        let fake = Self {
            seen: Arc::default(),
            behaviour,
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        (fake, format!("http://{addr}/whip/endpoint/cam"))
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn requests(&self, method: &Method) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == method)
            .collect()
    }

    /// Waits for a request with `method`.
    async fn wait(&self, method: Method) -> Seen {
        self.wait_at(method, "").await
    }

    /// Waits for a request with `method` to a path that starts with `path`.
    async fn wait_at(&self, method: Method, path: &str) -> Seen {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found = self
                .requests(&method)
                .into_iter()
                .find(|s| s.path.starts_with(path));
            if let Some(s) = found {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {method} within the wait; seen: {:?}",
                self.seen()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(
    State(fake): State<Fake>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    fake.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: uri.path().to_owned(),
        headers: headers.clone(),
        body: body.clone(),
        from,
    });
    let b = &fake.behaviour;
    let mut out = HeaderMap::new();
    match (method.as_str(), uri.path()) {
        ("OPTIONS", _) => {
            for l in &b.options_links {
                out.append("link", l.parse().unwrap());
            }
            (StatusCode::NO_CONTENT, out).into_response()
        }
        ("POST", "/old/endpoint") => {
            out.insert("location", "/whip/endpoint/cam".parse().unwrap());
            (StatusCode::TEMPORARY_REDIRECT, out).into_response()
        }
        ("POST", "/whip/endpoint/cam") => {
            let status = StatusCode::from_u16(b.status).unwrap();
            for (k, v) in &b.extra {
                out.append(*k, v.parse().unwrap());
            }
            if !status.is_success() {
                return (status, out, b.body.to_owned()).into_response();
            }
            if let Some(l) = b.location {
                out.insert("location", l.parse().unwrap());
            }
            out.insert("content-type", "application/sdp".parse().unwrap());
            out.insert("etag", "\"xyzzy\"".parse().unwrap());
            out.insert(
                "accept-patch",
                "application/trickle-ice-sdpfrag".parse().unwrap(),
            );
            (status, out, answer_to(&body, b.reject_video)).into_response()
        }
        ("PATCH", "/whip/resource/1") => StatusCode::NO_CONTENT.into_response(),
        ("DELETE", "/whip/resource/1") => StatusCode::OK.into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// An answer that takes every section of `offer` (or rejects the video),
/// with ICE credentials of its own and no candidates.
fn answer_to(offer: &str, reject_video: bool) -> String {
    let mut out = String::new();
    for line in offer.lines() {
        let line = if line.starts_with("a=candidate") || line == "a=end-of-candidates" {
            continue;
        } else if line.starts_with("a=ice-ufrag:") {
            "a=ice-ufrag:fake".to_owned()
        } else if line.starts_with("a=ice-pwd:") {
            "a=ice-pwd:fakefakefakefakefakefake".to_owned()
        } else if line == "a=setup:actpass" {
            "a=setup:passive".to_owned()
        } else if line == "a=sendonly" {
            "a=recvonly".to_owned()
        } else if reject_video && line.starts_with("m=video ") {
            let rest: Vec<&str> = line.splitn(3, ' ').collect();
            format!("m=video 0 {}", rest[2])
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out
}

fn sender(url: &str, extra: &[&str]) -> Spawn {
    let mut args = vec!["send", "--test-source", "--whip", url];
    args.extend_from_slice(extra);
    Spawn::new("send", &args)
}

async fn exit_error(p: &mut Proc) -> String {
    let status = p.wait_exit().await;
    if status.success() {
        p.fail("exited 0 after a refusal");
    }
    // The last lines may still be on their way from the pipe.
    p.wait_stderr("p2p: error:").await;
    let err = p.stderr();
    let last = err
        .lines()
        .rev()
        .find(|l| l.starts_with("p2p: error:"))
        .unwrap_or_else(|| p.fail("no `p2p: error:` line"))
        .to_owned();
    last
}

#[tokio::test]
async fn the_client_speaks_whip_and_ends_the_session_on_ctrl_c() {
    // A STUN server the endpoint names on OPTIONS: the client must use it.
    let stun = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stun_addr = stun.local_addr().unwrap();
    let (fake, url) = Fake::start(Behaviour {
        options_links: vec![format!("<stun:{stun_addr}>; rel=\"ice-server\"")],
        ..Default::default()
    })
    .await;
    // Through a redirect, so Location is resolved against the final URL.
    let old = url.replace("/whip/endpoint/cam", "/old/endpoint");
    let mut p = sender(&old, &["--whip-token", "s3cret"])
        .env("P2P_WHIP_GATHER_MS", "0")
        .spawn();

    assert_eq!(fake.wait(Method::POST).await.path, "/old/endpoint");
    // The 307 is followed.
    let post = fake.wait_at(Method::POST, "/whip/endpoint/cam").await;
    assert_eq!(post.headers["content-type"], "application/sdp");
    assert_eq!(post.headers["authorization"], "Bearer s3cret");
    assert!(post.body.starts_with("v=0\r\n"), "{}", post.body);
    assert!(
        !post.body.replace("\r\n", "").contains('\n'),
        "the SDP has a bare LF:\n{}",
        post.body
    );
    assert!(post.body.contains("m=audio ") && post.body.contains("m=video "));
    assert!(
        !post.body.contains("a=sendrecv") && !post.body.contains("a=recvonly"),
        "the offer only sends:\n{}",
        post.body
    );

    // The STUN server from Link gets a binding request.
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(WAIT, stun.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| p.fail("the Link STUN server got no request"))
        .unwrap();
    assert!(
        n >= 20 && buf[0..2] == [0x00, 0x01],
        "a STUN Binding request"
    );

    // Offered without waiting for candidates: they follow by PATCH, to the
    // resolved resource, naming the session's ETag.
    let patch = fake.wait(Method::PATCH).await;
    assert_eq!(patch.path, "/whip/resource/1");
    assert_eq!(
        patch.headers["content-type"],
        "application/trickle-ice-sdpfrag"
    );
    assert_eq!(patch.headers["if-match"], "\"xyzzy\"");
    assert!(
        patch.body.contains("a=ice-ufrag:") && patch.body.contains("a=mid:"),
        "{}",
        patch.body
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while !fake
        .requests(&Method::PATCH)
        .iter()
        .any(|s| s.body.contains("a=end-of-candidates"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no end-of-candidates PATCH"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let candidates: usize = fake
        .requests(&Method::PATCH)
        .iter()
        .map(|s| s.body.matches("a=candidate:").count())
        .sum();
    assert!(candidates >= 1, "no candidate was trickled");

    p.signal("INT");
    let status = p.wait_exit().await;
    assert!(status.success(), "{}", p.stderr());
    let delete = fake.wait(Method::DELETE).await;
    assert_eq!(delete.path, "/whip/resource/1");
    assert_eq!(delete.headers["authorization"], "Bearer s3cret");
    for s in fake.seen() {
        assert!(s.from.ip().is_loopback(), "a request from {}", s.from);
    }
    // Without --room it joined no room, and does not say it did.
    let said = p.stderr();
    assert!(!said.contains("joined room"), "{said}");
    assert!(said.contains("in no room"), "{said}");
}

#[tokio::test]
async fn a_full_offer_carries_its_candidates_and_sends_no_patch() {
    let (fake, url) = Fake::start(Behaviour::default()).await;
    let mut p = sender(&url, &[]).spawn();
    let post = fake.wait(Method::POST).await;
    assert!(post.body.contains("a=candidate:"), "{}", post.body);
    assert!(!post.headers.contains_key("authorization"));
    p.wait_stderr("accepted the offer").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.signal("TERM");
    assert!(p.wait_exit().await.success(), "{}", p.stderr());
    let seen = fake.seen();
    assert_eq!(fake.requests(&Method::PATCH).len(), 0, "{seen:?}");
    assert_eq!(fake.requests(&Method::DELETE).len(), 1, "{seen:?}");
}

#[tokio::test]
async fn a_rejected_codec_is_named_and_the_session_deleted() {
    let (fake, url) = Fake::start(Behaviour {
        reject_video: true,
        ..Default::default()
    })
    .await;
    let mut p = sender(&url, &["--video-codec", "h264"]).spawn();
    let err = exit_error(&mut p).await;
    assert!(
        err.contains("rejected the video (H264)") && err.contains("--video-codec"),
        "{err}"
    );
    assert_eq!(fake.wait(Method::DELETE).await.path, "/whip/resource/1");
}

#[tokio::test]
async fn each_refusal_is_one_line_saying_what_to_fix() {
    let cases: Vec<(Behaviour, &[&str], &[&str])> = vec![
        (
            Behaviour {
                status: 401,
                body: "token required\n<html>",
                ..Default::default()
            },
            &[],
            &["wants a token (401)", "--whip-token", "token required"],
        ),
        (
            Behaviour {
                status: 403,
                ..Default::default()
            },
            &["--whip-token", "wrong"],
            &["refused the token (403)", "check --whip-token"],
        ),
        (
            Behaviour {
                status: 404,
                ..Default::default()
            },
            &[],
            &["no WHIP endpoint at", "(404)"],
        ),
        (
            Behaviour {
                status: 415,
                ..Default::default()
            },
            &[],
            &["does not take application/sdp (415)"],
        ),
        (
            Behaviour {
                status: 409,
                body: "Endpoint ID already in use",
                ..Default::default()
            },
            &[],
            &["busy", "(409)", "Endpoint ID already in use"],
        ),
        (
            Behaviour {
                status: 503,
                extra: vec![("retry-after", "7".into())],
                ..Default::default()
            },
            &[],
            &["unavailable (503, retry after 7 s)"],
        ),
        (
            Behaviour {
                status: 500,
                body: "boom",
                ..Default::default()
            },
            &[],
            &["answered 500 Internal Server Error", "boom"],
        ),
        (
            Behaviour {
                location: None,
                ..Default::default()
            },
            &[],
            &["without a Location", "could not be ended"],
        ),
    ];
    for (behaviour, args, expect) in cases {
        let status = behaviour.status;
        let (fake, url) = Fake::start(behaviour).await;
        let mut p = sender(&url, args).spawn();
        let err = exit_error(&mut p).await;
        for e in expect {
            assert!(err.contains(e), "{status}: {err:?} should say {e:?}");
        }
        assert!(!err.contains('\n'));
        assert_eq!(
            fake.requests(&Method::DELETE).len(),
            0,
            "{status}: nothing to delete"
        );
    }
}

#[tokio::test]
async fn a_dead_endpoint_is_one_line() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/whip");
    let mut p = sender(&url, &[]).spawn();
    let err = exit_error(&mut p).await;
    assert!(
        err.contains(&format!("WHIP POST {url}")) && err.contains("cannot connect"),
        "{err}"
    );
}

#[tokio::test]
async fn ice_servers_named_only_in_the_answer_are_used_when_the_connection_does_not_come_up() {
    let stun = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let link = format!("<stun:{}>; rel=\"ice-server\"", stun.local_addr().unwrap());
    let (fake, url) = Fake::start(Behaviour {
        extra: vec![("link", link)],
        ..Default::default()
    })
    .await;
    let mut p = sender(&url, &[]).spawn();
    // The fake's answer never connects: after a few seconds the session is
    // deleted and made again with the named server.
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(WAIT, stun.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| p.fail("the answer's STUN server got no request"))
        .unwrap();
    assert!(
        n >= 20 && buf[0..2] == [0x00, 0x01],
        "a STUN Binding request"
    );
    p.wait_stderr("trying again with them").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while fake.requests(&Method::POST).len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", fake.seen());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.requests(&Method::DELETE).len(), 1, "{:?}", fake.seen());
    p.signal("INT");
    assert!(p.wait_exit().await.success(), "{}", p.stderr());
    assert_eq!(fake.requests(&Method::DELETE).len(), 2, "{:?}", fake.seen());
}
