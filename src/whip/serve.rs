//! The HTTP side of serving WHIP and WHEP (RFC 9725 and its playback twin):
//! what `--whip-listen` and `--whep-listen` answer alike. Bearer tokens,
//! CORS for browser clients, content types, ETags, and the trickle PATCH's
//! checks. No webrtc-rs type appears here.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{parse_fragment, Fragment, SDP, SDPFRAG};

/// Largest offer or fragment read: an offer is a few kilobytes.
pub const MAX_BODY: usize = 64 * 1024;

/// A response with the CORS headers a browser client needs to read it.
pub fn reply(
    status: StatusCode,
    headers: &[(header::HeaderName, String)],
    body: String,
) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Patch"),
    );
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.append(name.clone(), v);
        }
    }
    r
}

/// A refusal whose body says why, in one line.
pub fn refuse(status: StatusCode, why: &str) -> Response {
    let mut headers = vec![(header::CONTENT_TYPE, "text/plain".to_owned())];
    if status == StatusCode::UNAUTHORIZED {
        headers.push((header::WWW_AUTHENTICATE, "Bearer".to_owned()));
    }
    reply(status, &headers, format!("{why}\n"))
}

/// A request refused: its status, and why in one line.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub why: String,
}

impl Refusal {
    fn new(status: StatusCode, why: impl Into<String>) -> Self {
        Self {
            status,
            why: why.into(),
        }
    }
}

impl From<Refusal> for Response {
    fn from(r: Refusal) -> Self {
        refuse(r.status, &r.why)
    }
}

/// The answer to a browser's preflight (OPTIONS).
pub fn preflight() -> Response {
    reply(
        StatusCode::NO_CONTENT,
        &[
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "POST, PATCH, DELETE, OPTIONS".into(),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Authorization, Content-Type, If-Match".into(),
            ),
            (header::HeaderName::from_static("accept-post"), SDP.into()),
        ],
        String::new(),
    )
}

/// The 201 that carries `answer`: where the session lives (`path`), its
/// ETag, and what PATCH takes.
pub fn created(path: &str, id: &str, answer: String) -> Response {
    reply(
        StatusCode::CREATED,
        &[
            (header::CONTENT_TYPE, SDP.into()),
            (header::LOCATION, path.to_owned()),
            (header::ETAG, etag_of(id)),
            (
                header::HeaderName::from_static("accept-patch"),
                SDPFRAG.into(),
            ),
        ],
        answer,
    )
}

pub fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

/// Whether the request carries `token` as its bearer token (anything
/// does, without one). Compared in constant time.
pub fn authorized(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = token else {
        return true;
    };
    use subtle::ConstantTimeEq as _;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    given.is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())))
}

/// The checks a POSTed offer must pass before anything is made for it.
pub fn check_offer(token: Option<&str>, headers: &HeaderMap) -> Result<(), Refusal> {
    if !authorized(token, headers) {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required",
        ));
    }
    if !content_type_is(headers, SDP) {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "an offer must be sent as application/sdp",
        ));
    }
    Ok(())
}

/// The ETag of session `id`: names its ICE session in PATCH requests.
pub fn etag_of(id: &str) -> String {
    format!("\"{}\"", id.get(..8).unwrap_or(id))
}

/// The candidates of a trickle PATCH to session `id`, whose offer had ICE
/// username fragment `ufrag`; or the refusal. An ICE restart (another
/// ufrag) is refused: the client makes a new session instead.
pub fn trickled(
    headers: &HeaderMap,
    body: &str,
    id: &str,
    ufrag: Option<&str>,
    again: &str,
) -> Result<Fragment, Refusal> {
    if !content_type_is(headers, SDPFRAG) {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "candidates must be sent as application/trickle-ice-sdpfrag",
        ));
    }
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    if if_match.is_some_and(|m| m.trim() != "*" && m.trim() != etag_of(id)) {
        return Err(Refusal::new(
            StatusCode::PRECONDITION_FAILED,
            "If-Match names another ICE session",
        ));
    }
    let fragment = parse_fragment(body);
    if fragment
        .ufrag
        .as_deref()
        .zip(ufrag)
        .is_some_and(|(a, b)| a != b)
    {
        return Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("ICE restarts are not supported: {again} instead"),
        ));
    }
    Ok(fragment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_bearer_token_must_match_exactly() {
        let h = |v| headers(&[("authorization", v)]);
        assert!(authorized(None, &HeaderMap::new()));
        assert!(authorized(Some("s3"), &h("Bearer s3")));
        assert!(authorized(Some("s3"), &h("bearer  s3 ")));
        assert!(!authorized(Some("s3"), &h("Bearer s33")));
        assert!(!authorized(Some("s3"), &h("Basic s3")));
        assert!(!authorized(Some("s3"), &HeaderMap::new()));
    }

    #[test]
    fn an_offer_needs_its_token_then_its_type() {
        let ok = headers(&[
            ("authorization", "Bearer t"),
            ("content-type", "application/sdp; charset=utf-8"),
        ]);
        assert!(check_offer(Some("t"), &ok).is_ok());
        let no_token = headers(&[("content-type", "application/sdp")]);
        let r = Response::from(check_offer(Some("t"), &no_token).unwrap_err());
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let text = headers(&[("content-type", "text/plain")]);
        let r = check_offer(None, &text).unwrap_err();
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn a_patch_for_another_ice_session_is_refused() {
        let id = "0123456789abcdef";
        let frag =
            "a=ice-ufrag:abcd\r\na=ice-pwd:x\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
                    a=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n";
        let ok = headers(&[("content-type", SDPFRAG), ("if-match", &etag_of(id))]);
        let f = trickled(&ok, frag, id, Some("abcd"), "publish again").unwrap();
        assert_eq!(f.candidates.len(), 1);
        let stale = headers(&[("content-type", SDPFRAG), ("if-match", "\"other\"")]);
        let r = trickled(&stale, frag, id, Some("abcd"), "publish again").unwrap_err();
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
        let r = trickled(&ok, frag, id, Some("zzzz"), "publish again").unwrap_err();
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        let sdp = headers(&[("content-type", SDP)]);
        let r = trickled(&sdp, frag, id, Some("abcd"), "publish again").unwrap_err();
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
