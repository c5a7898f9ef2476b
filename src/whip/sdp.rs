//! What the WHIP client reads from and writes into SDP text: the media
//! sections an answer rejected, and the fragments (RFC 8840) that carry
//! trickled candidates.

/// A media section of our offer that the answer turned down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// audio, video, application.
    pub kind: String,
    /// The codec we offered in it (its first payload type's encoding
    /// name), when there is one.
    pub codec: Option<String>,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.codec {
            Some(c) => write!(f, "{} ({c})", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// One `m=` section: its m-line and attribute lines.
struct Section<'a> {
    kind: &'a str,
    port: &'a str,
    formats: Vec<&'a str>,
    lines: Vec<&'a str>,
}

impl Section<'_> {
    fn attr(&self, name: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix("a=")?.strip_prefix(name))
            .map(str::trim)
    }

    fn mid(&self) -> Option<&str> {
        self.attr("mid:")
    }

    /// The encoding name of the first payload type.
    fn codec(&self) -> Option<String> {
        let first = self.formats.first()?;
        self.lines.iter().find_map(|l| {
            let rest = l.strip_prefix("a=rtpmap:")?;
            let (pt, encoding) = rest.split_once(' ')?;
            (pt == *first).then(|| encoding.split('/').next().unwrap_or(encoding).to_owned())
        })
    }
}

/// The session-level lines, then each media section.
fn sections(sdp: &str) -> (Vec<&str>, Vec<Section<'_>>) {
    let mut session = Vec::new();
    let mut media: Vec<Section<'_>> = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut words = m.split_ascii_whitespace();
            let kind = words.next().unwrap_or("");
            let port = words.next().unwrap_or("");
            let formats = words.skip(1).collect();
            media.push(Section {
                kind,
                port,
                formats,
                lines: Vec::new(),
            });
        } else if let Some(s) = media.last_mut() {
            s.lines.push(line);
        } else {
            session.push(line);
        }
    }
    (session, media)
}

/// The sections of `offer` that `answer` rejects: left out, port 0 (RFC
/// 8829), no payload type in common with the offer, or inactive (Janus
/// answers a codec its room does not allow with port 9, payload type 0
/// and `a=inactive`). Sections are matched by mid, or by position when
/// there is none.
pub fn rejected(offer: &str, answer: &str) -> Vec<Rejected> {
    let (_, offered) = sections(offer);
    let (_, answered) = sections(answer);
    offered
        .iter()
        .enumerate()
        .filter(|(i, o)| {
            let matching = match o.mid() {
                Some(mid) => answered.iter().find(|a| a.mid() == Some(mid)),
                None => answered.get(*i),
            };
            matching.is_none_or(|a| {
                a.port == "0"
                    || !a.formats.iter().any(|f| o.formats.contains(f))
                    || a.lines.contains(&"a=inactive")
            })
        })
        .map(|(_, o)| Rejected {
            kind: o.kind.to_owned(),
            codec: o.codec(),
        })
        .collect()
}

impl Section<'_> {
    /// Audio or video, not turned down (port 0).
    fn is_live_media(&self) -> bool {
        matches!(self.kind, "audio" | "video") && self.port != "0"
    }

    /// Its direction attribute; sendrecv when it has none.
    fn direction(&self) -> &str {
        const DIRECTIONS: [&str; 4] = ["sendrecv", "sendonly", "recvonly", "inactive"];
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix("a="))
            .find(|a| DIRECTIONS.contains(a))
            .unwrap_or("sendrecv")
    }
}

/// Whether `sdp`'s sender takes in audio or video: a media section that
/// is live and receives (what a WHEP viewer's offer has).
pub fn receives_media(sdp: &str) -> bool {
    let (_, media) = sections(sdp);
    media
        .iter()
        .any(|m| m.is_live_media() && matches!(m.direction(), "recvonly" | "sendrecv"))
}

/// Whether `sdp` has a live section of `mime`'s kind (`video/VP8`) that
/// receives, and whether one of them names its codec: (None) no such
/// section, (Some(false)) none names it.
pub fn receives_codec(sdp: &str, mime: &str) -> Option<bool> {
    let (kind, codec) = mime.split_once('/')?;
    let (_, media) = sections(sdp);
    let mut receiving = media
        .iter()
        .filter(|m| {
            m.kind == kind && m.is_live_media() && matches!(m.direction(), "recvonly" | "sendrecv")
        })
        .peekable();
    receiving.peek()?;
    Some(receiving.any(|m| {
        m.lines.iter().any(|l| {
            l.strip_prefix("a=rtpmap:")
                .and_then(|r| r.split_once(' '))
                .and_then(|(_, enc)| enc.split('/').next())
                .is_some_and(|name| name.eq_ignore_ascii_case(codec))
        })
    }))
}

/// How many audio and video sections of `sdp` its sender sends on: live,
/// sending, naming a codec.
pub fn sending_sections(sdp: &str) -> usize {
    let (_, media) = sections(sdp);
    media
        .iter()
        .filter(|m| {
            m.is_live_media()
                && matches!(m.direction(), "sendonly" | "sendrecv")
                && !m.formats.is_empty()
        })
        .count()
}

/// Whether `sdp`'s sender sends audio or video.
pub fn sends_media(sdp: &str) -> bool {
    sending_sections(sdp) > 0
}

/// A trickle fragment (RFC 8840) of `local`'s ICE credentials and its first
/// media section (all are bundled) with `candidates` (`candidate:…`), and
/// `a=end-of-candidates` when `end`. None when `local` has no ICE
/// credentials or media section.
pub fn candidate_fragment(local: &str, candidates: &[String], end: bool) -> Option<String> {
    let (session, media) = sections(local);
    let first = media.first()?;
    let find = |name: &str| {
        session
            .iter()
            .find_map(|l| l.strip_prefix("a=")?.strip_prefix(name))
            .or_else(|| first.attr(name))
            .map(str::trim)
    };
    let ufrag = find("ice-ufrag:")?;
    let pwd = find("ice-pwd:")?;
    let mut out = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
    let proto = local
        .lines()
        .find_map(|l| l.strip_prefix("m="))
        .and_then(|m| m.split_ascii_whitespace().nth(2))
        .unwrap_or("UDP/TLS/RTP/SAVPF");
    out.push_str(&format!(
        "m={} 9 {proto} {}\r\n",
        first.kind,
        first.formats.join(" ")
    ));
    if let Some(mid) = first.mid() {
        out.push_str(&format!("a=mid:{mid}\r\n"));
    }
    for c in candidates {
        let c = c.trim().trim_start_matches("a=");
        out.push_str(&format!("a={c}\r\n"));
    }
    if end {
        out.push_str("a=end-of-candidates\r\n");
    }
    Some(out)
}

/// What a trickle fragment (RFC 8840) a publisher PATCHes carries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    /// The mid of the section the candidates belong to.
    pub mid: Option<String>,
    /// `candidate:…` values.
    pub candidates: Vec<String>,
    pub end: bool,
}

/// Reads a trickle fragment; anything else in it is ignored.
pub fn parse_fragment(text: &str) -> Fragment {
    let mut f = Fragment::default();
    for line in text.lines().map(str::trim) {
        let Some(attr) = line.strip_prefix("a=") else {
            continue;
        };
        if let Some(v) = attr.strip_prefix("ice-ufrag:") {
            f.ufrag = Some(v.trim().to_owned());
        } else if let Some(v) = attr.strip_prefix("ice-pwd:") {
            f.pwd = Some(v.trim().to_owned());
        } else if let Some(v) = attr.strip_prefix("mid:") {
            f.mid.get_or_insert_with(|| v.trim().to_owned());
        } else if attr.starts_with("candidate:") {
            f.candidates.push(attr.to_owned());
        } else if attr == "end-of-candidates" {
            f.end = true;
        }
    }
    f
}

/// The ICE ufrag of a description (session level or first section).
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:secretsecret\r\n\
        a=mid:0\r\na=rtpmap:111 opus/48000/2\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102 103\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
        a=rtpmap:102 H264/90000\r\na=rtpmap:103 rtx/90000\r\n";

    fn answer(audio_port: u16, video_port: u16) -> String {
        format!(
            "v=0\r\no=- 2 2 IN IP4 127.0.0.2\r\ns=-\r\nt=0 0\r\n\
             m=audio {audio_port} UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
             m=video {video_port} UDP/TLS/RTP/SAVPF 102 103\r\na=mid:1\r\n"
        )
    }

    #[test]
    fn a_viewer_offer_receives_and_an_answer_to_it_sends() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n";
        assert!(receives_media(offer));
        assert!(!sends_media(offer));
        let answer = "v=0\r\nm=audio 0 UDP/TLS/RTP/SAVPF 0\r\na=inactive\r\n\
                      m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n";
        assert!(sends_media(answer));
        assert_eq!(sending_sections(answer), 1);
        let refused = "v=0\r\nm=audio 0 UDP/TLS/RTP/SAVPF 0\r\n\
                       m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\n";
        assert!(!sends_media(refused));
        // No direction means both ways; data alone is not media.
        assert!(receives_media("m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"));
        assert!(!receives_media(
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        ));
        assert!(!receives_media(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n"
        ));
    }

    #[test]
    fn a_viewer_offer_names_the_codecs_it_takes() {
        let offer =
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=recvonly\r\na=rtpmap:102 H264/90000\r\n";
        assert_eq!(receives_codec(offer, "audio/opus"), Some(true));
        assert_eq!(receives_codec(offer, "video/H264"), Some(true));
        assert_eq!(receives_codec(offer, "video/VP8"), Some(false));
        let audio_only = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(receives_codec(audio_only, "video/VP8"), None);
    }

    #[test]
    fn a_fragment_is_read_back() {
        let c = vec!["candidate:2 1 udp 1 10.0.0.1 6000 typ host".to_owned()];
        let text = candidate_fragment(OFFER, &c, true).unwrap();
        assert_eq!(
            parse_fragment(&text),
            Fragment {
                ufrag: Some("abcd".into()),
                pwd: Some("secretsecret".into()),
                mid: Some("0".into()),
                candidates: c,
                end: true,
            }
        );
        assert_eq!(ice_ufrag(OFFER), Some("abcd"));
    }

    #[test]
    fn an_answer_that_takes_every_section_rejects_none() {
        assert_eq!(rejected(OFFER, &answer(9, 9)), vec![]);
    }

    #[test]
    fn a_section_with_port_zero_is_rejected_with_the_codec_we_offered() {
        let r = rejected(OFFER, &answer(9, 0));
        assert_eq!(
            r,
            vec![Rejected {
                kind: "video".into(),
                codec: Some("H264".into())
            }]
        );
        assert_eq!(r[0].to_string(), "video (H264)");
    }

    #[test]
    fn a_section_with_no_common_codec_or_inactive_is_rejected() {
        // What Janus answers for a codec its room does not allow.
        let janus = answer(9, 9).replace(
            "m=video 9 UDP/TLS/RTP/SAVPF 102 103\r\na=mid:1",
            "m=video 9 UDP/TLS/RTP/SAVPF 0\r\na=inactive\r\na=mid:1",
        );
        assert_eq!(rejected(OFFER, &janus)[0].to_string(), "video (H264)");
        let inactive = answer(9, 9).replace("a=mid:0", "a=mid:0\r\na=inactive");
        assert_eq!(rejected(OFFER, &inactive)[0].to_string(), "audio (opus)");
    }

    #[test]
    fn a_section_left_out_of_the_answer_is_rejected() {
        let only_audio = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
        let r = rejected(OFFER, only_audio);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].kind, "video");
    }

    #[test]
    fn a_fragment_carries_credentials_the_first_section_and_candidates() {
        let c = vec!["candidate:2 1 udp 1 10.0.0.1 6000 typ host".to_owned()];
        let frag = candidate_fragment(OFFER, &c, true).unwrap();
        assert_eq!(
            frag,
            "a=ice-ufrag:abcd\r\na=ice-pwd:secretsecret\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
             a=mid:0\r\na=candidate:2 1 udp 1 10.0.0.1 6000 typ host\r\na=end-of-candidates\r\n"
        );
        assert_eq!(candidate_fragment("v=0\r\ns=-\r\n", &c, false), None);
    }
}
