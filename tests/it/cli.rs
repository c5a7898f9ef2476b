//! The command line as a new user meets it.

use crate::harness::*;

fn p2p(args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .output()
        .expect("run p2p")
}

#[test]
fn help_explains_every_command_and_flag() {
    let out = p2p(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["send", "receive", "signal"] {
        assert!(text.contains(cmd), "--help lacks {cmd}:\n{text}");
    }
    // What it does today, media included, not what it would do "soon".
    for word in ["camera", "microphone", "media file", "stdin", "record"] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
    assert!(!text.contains("soon"), "stale --help:\n{text}");
    // Examples a new user can paste, and what each exit code means.
    for word in [
        "Examples",
        "--test-source",
        "Exit status:",
        "  2  an unusable",
    ] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
    for (cmd, flags) in [
        (
            "signal",
            &["--listen", "--token", "--max-frame", "P2P_LISTEN"][..],
        ),
        (
            "send",
            &[
                "--signal",
                "--room",
                "--ice-server",
                "--verify",
                "--binary",
                "--test-pattern",
                "zone-plate",
                "P2P_SIGNAL",
                "P2P_ROOM",
            ][..],
        ),
        (
            "receive",
            &[
                "--signal",
                "--room",
                "--credentials",
                "--ping-interval",
                "--binary",
            ][..],
        ),
    ] {
        let out = p2p(&[cmd, "--help"]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for f in flags {
            assert!(text.contains(f), "`p2p {cmd} --help` lacks {f}:\n{text}");
        }
    }
}

/// `-h` is grouped by task, and what to send or keep comes first, before
/// the relay and connection plumbing.
#[test]
fn short_help_starts_with_what_to_send_and_keep() {
    let headings = |cmd: &str| -> Vec<String> {
        let out = p2p(&[cmd, "-h"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with(' ') && l.ends_with(':'))
            .map(|l| l.trim_end_matches(':').to_owned())
            .collect()
    };
    let send = headings("send");
    assert_eq!(
        send,
        [
            "Options",
            "Media",
            "Data from stdin",
            "Room and relay",
            "Connection",
            "Who receives",
            "WHIP and WHEP (SFUs, OBS, players)",
            "Reporting",
            "Examples"
        ],
        "{send:?}"
    );
    let receive = headings("receive");
    assert_eq!(
        &receive[..3],
        ["Options", "Media", "Data to stdout"],
        "{receive:?}"
    );
    // The receiver's --binary speaks of what the receiver does.
    let out = p2p(&["receive", "-h"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let binary = text
        .lines()
        .find(|l| l.trim_start().starts_with("--binary"))
        .unwrap_or_default();
    assert!(binary.contains("Write what senders send"), "{binary}");
}

#[test]
fn bad_signal_url_is_one_line_naming_the_schemes() {
    for cmd in ["send", "receive"] {
        let out = p2p(&[cmd, "--signal", "foo://x"]);
        // An unusable option, refused before anything starts.
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{cmd}: {err}");
        assert!(
            lines[0].contains("foo://x") && lines[0].contains("ws://"),
            "{err}"
        );
    }
}

#[test]
fn unusable_files_are_one_line_errors() {
    for args in [
        &[
            "receive",
            "--signal",
            "nats://127.0.0.1:1",
            "--nats-creds",
            "/nonexistent.creds",
        ][..],
        &[
            "receive",
            "--signal",
            "wss://127.0.0.1:1",
            "--ca-file",
            "/nonexistent.pem",
        ][..],
        &[
            "signal",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.key",
        ][..],
    ] {
        let out = p2p(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("p2p: error:") && last.contains("/nonexistent"),
            "{args:?}: {err}"
        );
    }
}

/// A `--file` that cannot be sent is refused before anything starts, in
/// one line that names it and says why, with the code for unusable options.
#[test]
fn an_unusable_media_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a video\n").unwrap();
    let ogg = dir.path().join("tone.ogg");
    let made = std::process::Command::new("gst-launch-1.0")
        .args([
            "-q",
            "audiotestsrc",
            "num-buffers=10",
            "!",
            "audioconvert",
            "!",
        ])
        .args(["opusenc", "!", "oggmux", "!", "filesink"])
        .arg(format!("location={}", ogg.display()))
        .status()
        .unwrap();
    assert!(made.success());
    let dir_path = dir.path().display().to_string();
    for (file, extra, says) in [
        (notes.display().to_string(), "", "not a media file"),
        ("/nonexistent.webm".into(), "", "no such file"),
        (dir_path, "", "is a directory"),
        (
            ogg.display().to_string(),
            "--no-audio",
            "has no video, and --no-audio leaves nothing",
        ),
    ] {
        let mut args = vec!["send", "--signal", "memory:", "--file", &file];
        if !extra.is_empty() {
            args.push(extra);
        }
        let out = p2p(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert_eq!(err.lines().count(), 1, "{file}: {err}");
        assert!(
            err.starts_with(&format!("p2p: error: --file {file}")) && err.contains(says),
            "{file}: {err}"
        );
    }
}

/// Runs `p2p` with `args`, failing if it is still running after `WAIT`.
fn p2p_bounded(args: &[&str]) -> std::process::Output {
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run p2p");
    let deadline = std::time::Instant::now() + WAIT;
    while child.try_wait().expect("wait for p2p").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect p2p");
            panic!(
                "p2p {args:?} still running after {WAIT:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect p2p")
}

/// `p2p receive --record PATH` against port 1 (no relay there: a receiver
/// that got past the check would retry for ever instead of exiting): it
/// must fail at once with code 2 and one line about --record; that line.
fn refused_record(path: &str) -> String {
    let started = std::time::Instant::now();
    let out = p2p_bounded(&[
        "receive",
        "--signal",
        "ws://127.0.0.1:1",
        "--room",
        "r",
        "--record",
        path,
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{path}: {err}");
    assert_eq!(err.lines().count(), 1, "{path}: {err}");
    assert!(err.starts_with("p2p: error: --record"), "{path}: {err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{path}: took {:?}",
        started.elapsed()
    );
    err
}

#[test]
fn an_existing_recording_is_kept_unless_overwrite_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let earlier = dir.path().join("earlier.webm");
    std::fs::write(&earlier, b"yesterday's recording").unwrap();
    let path = earlier.to_str().unwrap();
    let err = refused_record(path);
    assert!(err.contains(path) && err.contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read(&earlier).unwrap(), b"yesterday's recording");
}

#[test]
fn an_unusable_record_directory_fails_at_start_with_code_2() {
    for (path, dir) in [
        ("/nonexistent/dir/x.webm", "/nonexistent/dir"),
        ("/nonexistent/dir/{id}.webm", "/nonexistent/dir"),
        ("/nonexistent/{id}/x.webm", "/nonexistent"),
    ] {
        let err = refused_record(path);
        assert!(
            err.contains(&format!("directory {dir} does not exist")),
            "{path}: {err}"
        );
    }
}

#[test]
fn display_without_a_graphical_session_says_so() {
    let out = p2p(&["receive", "--display", "--signal", "memory:"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--display") && err.contains("DISPLAY"),
        "{err}"
    );
}

#[test]
fn a_test_pattern_needs_the_test_source() {
    let out = p2p(&["send", "--room", "x", "--test-pattern", "zone-plate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--test-source"), "{err}");
}

#[test]
fn completions_and_the_manual_page_cover_every_command() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef p2p"),
        ("fish", "complete -c p2p"),
    ] {
        let out = p2p(&["completions", shell]);
        assert!(out.status.success(), "completions {shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell} script lacks {marker:?}");
        for word in ["send", "receive", "signal", "--record", "--room"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
    }
    let out = p2p(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));

    let out = p2p(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH p2p"),
        "not roff:\n{page}"
    );
    for word in ["send", "receive", "signal"] {
        assert!(page.contains(word), "the manual page lacks {word}");
    }
}

/// A port nobody listens on (bound, read, released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn an_unreachable_relay_is_not_an_empty_room() {
    // Nothing there: said at once, given up after --connection-timeout.
    let url = format!("ws://127.0.0.1:{}", closed_port());
    for cmd in ["receive", "send"] {
        let mut p = Spawn::new(cmd, &[cmd, "--signal", &url, "--connection-timeout", "2"]).spawn();
        let status = p.wait_exit().await;
        assert_eq!(status.code(), Some(1), "{cmd}:\n{}", p.stderr());
        // Its last words may still be on their way through the pipe.
        p.wait_stderr(&format!("{url} for 2 s")).await;
        let err = p.stderr();
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.contains("cannot reach the relay") && last.contains(&url) && last.contains("2 s"),
            "{cmd}'s last line does not say the relay was out of reach:\n{err}"
        );
    }

    // A relay that comes up before the timeout is reached, and the receiver
    // stays.
    let port = closed_port();
    let url = format!("ws://127.0.0.1:{port}");
    let mut rx = Spawn::new(
        "receiver",
        &["receive", "--signal", &url, "--connection-timeout", "20"],
    )
    .spawn();
    rx.wait_stderr("cannot reach the relay").await;
    let _relay = Relay::start_on(&format!("127.0.0.1:{port}"), &[]).await;
    rx.wait_stderr("reached the relay").await;
    assert!(rx.child.try_wait().unwrap().is_none(), "the receiver ended");
}

/// What `p2p receive` prints on a terminal in its first moment, through
/// script(1), with `env` added to the environment.
fn on_a_terminal(env: &[(&str, &str)]) -> String {
    let cmd = format!("timeout -s INT 1 {BIN} receive --signal memory: --room tty");
    let out = std::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .envs(env.iter().copied())
        .output()
        .expect("run script(1)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// On a terminal a log line starts with the time of day, not a UTC stamp
/// to the nanosecond, and NO_COLOR takes the colour out of it.
#[test]
fn log_lines_on_a_terminal_are_short_and_honour_no_color() {
    let coloured = on_a_terminal(&[]);
    let line = coloured
        .lines()
        .find(|l| l.contains("joined room"))
        .unwrap_or_else(|| panic!("no log line: {coloured:?}"));
    assert!(line.contains('\x1b'), "no colour on a terminal: {line:?}");
    let plain = on_a_terminal(&[("NO_COLOR", "1")]);
    let line = plain
        .lines()
        .find(|l| l.contains("joined room"))
        .unwrap_or_else(|| panic!("no log line: {plain:?}"));
    assert!(
        !plain.contains('\x1b'),
        "colour despite NO_COLOR: {plain:?}"
    );
    // "09:46:11  INFO receiver …"
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let parts: Vec<&str> = stamp.split(':').collect();
    assert!(
        parts.len() == 3
            && parts
                .iter()
                .all(|p| p.len() == 2 && p.parse::<u8>().is_ok()),
        "not a time of day: {line:?}"
    );
}
