//! `Link` headers (RFC 8288) naming ICE servers, as WHIP endpoints send
//! them: `<turn:turn.example.net?transport=udp>; rel="ice-server";
//! username="user"; credential="pass"; credential-type="password"`.

use http::{header, HeaderMap};

/// An ICE server an endpoint named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkServer {
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
}

/// The STUN and TURN servers in `headers`' `Link` values.
pub fn ice_servers(headers: &HeaderMap) -> Vec<LinkServer> {
    headers
        .get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_outside_quotes)
        .filter_map(|link| parse(&link))
        .collect()
}

/// One link value: the target, and the parameters if its rel is
/// ice-server and its scheme an ICE one.
fn parse(link: &str) -> Option<LinkServer> {
    let link = link.trim();
    let rest = link.strip_prefix('<')?;
    let (url, params) = rest.split_once('>')?;
    let scheme = url.split(':').next()?.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "stun" | "stuns" | "turn" | "turns") {
        return None;
    }
    let mut rel = false;
    let (mut username, mut credential) = (None, None);
    for param in split_outside_quotes_by(params, ';') {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match name.trim().to_ascii_lowercase().as_str() {
            "rel" => {
                rel = value
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("ice-server"));
            }
            "username" => username = Some(value),
            "credential" => credential = Some(value),
            _ => {}
        }
    }
    rel.then(|| LinkServer {
        url: url.trim().to_owned(),
        username,
        credential,
    })
}

fn split_outside_quotes(value: &str) -> Vec<String> {
    split_outside_quotes_by(value, ',')
}

/// Splits at `sep` outside quoted strings and `<…>`.
fn split_outside_quotes_by(value: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' && !angle {
            quoted = !quoted;
        } else if c == '<' && !quoted {
            angle = true;
        } else if c == '>' && !quoted {
            angle = false;
        } else if c == sep && !quoted && !angle {
            parts.push(std::mem::take(&mut current));
            continue;
        }
        current.push(c);
    }
    parts.push(current);
    parts.retain(|p| !p.trim().is_empty());
    parts
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut escaped = false;
            for c in inner.chars() {
                if c == '\\' && !escaped {
                    escaped = true;
                    continue;
                }
                escaped = false;
                out.push(c);
            }
            out
        }
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::LINK, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn stun_and_turn_links_become_ice_servers() {
        let h = headers(&[
            r#"<stun:127.0.0.1:3478>; rel="ice-server""#,
            r#"<turn:127.0.0.1:3478?transport=udp>; rel="ice-server"; username="u;1"; credential="p,\"q"; credential-type="password""#,
        ]);
        assert_eq!(
            ice_servers(&h),
            vec![
                LinkServer {
                    url: "stun:127.0.0.1:3478".into(),
                    username: None,
                    credential: None
                },
                LinkServer {
                    url: "turn:127.0.0.1:3478?transport=udp".into(),
                    username: Some("u;1".into()),
                    credential: Some("p,\"q".into())
                },
            ]
        );
    }

    #[test]
    fn several_links_in_one_header_and_other_rels_are_told_apart() {
        let h = headers(&[
            r#"<https://example.net/doc>; rel="help", <stun:10.0.0.1>; rel=ice-server, <turns:t.example:5349?transport=tcp>; rel="preload ice-server"; username=a; credential=b"#,
        ]);
        let urls: Vec<String> = ice_servers(&h).into_iter().map(|s| s.url).collect();
        assert_eq!(
            urls,
            ["stun:10.0.0.1", "turns:t.example:5349?transport=tcp"]
        );
    }

    #[test]
    fn malformed_links_are_skipped() {
        let h = headers(&[
            r#"stun:10.0.0.1; rel="ice-server""#,
            r#"<stun:10.0.0.2"#,
            "<http://x>; rel=ice-server",
        ]);
        assert!(ice_servers(&h).is_empty());
    }
}
