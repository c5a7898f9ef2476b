"""Figure 10 of bench/run.py: the link matrix (issue 23).

Each cell is a link people have: a shaper's rate, bucket and queue, a round
trip, random loss, several viewers behind the sender's one uplink, a cap
that drops and rises. Every cell is run three ways, one after the other,
through the same namespaces and links, with the same picture (a 720p zone
plate; p2p asks for 2.5 Mbit/s):

- Chromium → Chromium: the seed library in two headless pages (the
  baseline), its fake camera playing a .y4m of the picture;
- `p2p send` → our page in headless Chromium;
- `p2p send` → `p2p receive --record`.

The topology: a hub namespace (the relay, and the user-space link of
examples/wan.rs that adds each leaf's delay, jitter and loss) and leaves
routed through it; the sender in leaf 0, viewers in leaves 1..n. A cell's
round trip R is split over both ends' access links (R/4 each way each).
"""

import json
import os
import subprocess
import time
import uuid

import __main__ as bench  # bench/run.py: spawn, stop, cleanup, video_window, …

SETTLE, WINDOW = 8, 12  # s after a viewer starts, then the measured window

# (key, label, viewers, where the shaper sits, (rate, bucket, queue), round
# trip ms, viewer-side loss, cap schedule [(at s, rate)], in quick mode)
CELLS = [
    ("shallow", "1 Mbit/s, 4 KB bucket, 100 ms queue", 1, "down", ("1mbit", "4kb", "100ms"), 0, None, [], False),
    ("shallow-50", "1 Mbit/s, 4 KB bucket, 100 ms queue, 50 ms round trip", 1, "down",
     ("1mbit", "4kb", "100ms"), 50, None, [], False),
    ("shallow-150", "1 Mbit/s, 4 KB bucket, 100 ms queue, 150 ms round trip", 1, "down",
     ("1mbit", "4kb", "100ms"), 150, None, [], True),
    ("packet-bucket", "1 Mbit/s, one-packet bucket (1.6 KB), 20 ms queue, 50 ms round trip", 1, "down",
     ("1mbit", "1600", "20ms"), 50, None, [], False),
    ("bloat", "1 Mbit/s, 64 KB bucket, 1 s queue, 50 ms round trip", 1, "down",
     ("1mbit", "64kb", "1000ms"), 50, None, [], False),
    ("uplink-3", "3 viewers behind the sender's 3 Mbit/s uplink (4 KB bucket, 100 ms queue), 50 ms round trip",
     3, "up", ("3mbit", "4kb", "100ms"), 50, None, [], False),
    ("loss-1", "2.5 Mbit/s (10 KB, 150 ms), 1 % loss, 50 ms round trip", 1, "down",
     ("2.5mbit", "10kb", "150ms"), 50, 1, [], False),
    ("loss-5", "no cap, 5 % loss, 50 ms round trip", 1, None, None, 50, 5, [], False),
    ("cap-drop", "2 Mbit/s, 500 kbit/s from 8 s to 14 s, then 2 Mbit/s again (10 KB, 150 ms), 50 ms round trip",
     1, "down", ("2mbit", "10kb", "150ms"), 50, None, [(8, "500kbit"), (14, "2mbit")], False),
]


class WanStar:
    """A hub and `n` leaves, leaf k on 10.235.{k+1}.0/24 (hub .1, leaf .2),
    routed through the hub, where examples/wan.rs holds each leaf's packets
    for its access link's delay and loss."""

    def __init__(self, n, wan_bin, profiles):
        tag = uuid.uuid4().hex[:6]
        self.hub = f"p2pbenchW-{tag}"
        self.leaves = [f"p2pbenchM{k}-{tag}" for k in range(n)]
        self.wan = None
        try:
            for ns in [self.hub, *self.leaves]:
                self._run("ip", "netns", "add", ns)
                self._run("ip", "-n", ns, "link", "set", "lo", "up")
            self._run("ip", "netns", "exec", self.hub, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                      "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
            for k, leaf in enumerate(self.leaves):
                dev = f"leaf{k}"
                self._run("ip", "link", "add", dev, "netns", self.hub, "type", "veth", "peer", "name", "eth0",
                          "netns", leaf)
                for ns, d, addr in ((self.hub, dev, self.hub_addr(k)), (leaf, "eth0", self.leaf_addr(k))):
                    self._run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", d)
                    self._run("ip", "-n", ns, "link", "set", d, "up")
                self._run("ip", "-n", leaf, "route", "add", "default", "via", self.hub_addr(k))
            hosts = [a for k, spec in profiles.items() if spec for a in ("--host", f"{self.leaf_addr(k)}={spec}")]
            if hosts:
                self.wan = bench.spawn(["ip", "netns", "exec", self.hub, wan_bin, "--dev", "wan0", *hosts],
                                       stdout=subprocess.PIPE, text=True)
                if self.wan.stdout.readline().strip() != "ready":
                    raise RuntimeError("examples/wan did not start")
                self._run("ip", "netns", "exec", self.hub, "sysctl", "-qw", "net.ipv4.conf.wan0.rp_filter=0")
                self._run("ip", "-n", self.hub, "route", "add", "default", "dev", "wan0", "table", "7")
                self._run("ip", "-n", self.hub, "rule", "add", "iif", "wan0", "lookup", "main", "pref", "100")
                for k in range(n):
                    self._run("ip", "-n", self.hub, "rule", "add", "iif", f"leaf{k}", "lookup", "7", "pref", "200")
        except Exception:
            self.close()
            raise

    @staticmethod
    def _run(*args):
        subprocess.run(args, check=True)

    @staticmethod
    def hub_addr(k):
        return f"10.235.{k + 1}.1"

    @staticmethod
    def leaf_addr(k):
        return f"10.235.{k + 1}.2"

    def shape_down(self, k, rate, burst, queue):
        """What leaf k gets: the hub's egress towards it."""
        self._run("ip", "netns", "exec", self.hub, "tc", "qdisc", "replace", "dev", f"leaf{k}", "root", "tbf",
                  "rate", rate, "burst", burst, "latency", queue)

    def shape_up(self, k, rate, burst, queue):
        """What leaf k sends: its own egress."""
        self._run("ip", "netns", "exec", self.leaves[k], "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf",
                  "rate", rate, "burst", burst, "latency", queue)

    def exec(self, ns, args):
        return ["ip", "netns", "exec", ns, *args]

    def close(self):
        if self.wan is not None:
            bench.stop(self.wan, wait=2)
        for ns in [self.hub, *self.leaves]:
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def y4m(b):
    """The picture Chromium's fake camera plays: the zone plate p2p sends."""
    path = os.path.join(b.tmp, "zone-plate-720p.y4m")
    if not os.path.exists(path):
        subprocess.run(["gst-launch-1.0", "-q", "videotestsrc", "pattern=zone-plate", "kt=4", "kx2=40", "ky2=40",
                        "num-buffers=90", "!", "video/x-raw,format=I420,width=1280,height=720,framerate=30/1",
                        "!", "y4menc", "!", "filesink", f"location={path}"], check=True, timeout=180)
    return path


def build(b, cell):
    key, label, n, where, shape, rtt, loss, caps, _ = cell
    side = f"delay:{rtt / 4:g}ms,jitter:{min(rtt / 40, 2):g}ms" if rtt else ""
    profiles = {0: side}
    for k in range(1, n + 1):
        parts = [p for p in (side, f"loss:{loss}%" if loss else "") if p]
        profiles[k] = ",".join(parts)
    star = WanStar(n + 1, b.wan, profiles)
    if where == "up":
        star.shape_up(0, *shape)
    elif where == "down":
        for k in range(1, n + 1):
            star.shape_down(k, *shape)
    return star


def schedule(star, cell, t0):
    """Runs the cell's cap changes (seconds after t0) in the background."""
    key, label, n, where, shape, rtt, loss, caps, _ = cell
    if not caps:
        return None
    import threading

    def go():
        for at, rate in caps:
            time.sleep(max(0.0, t0 + at - time.time()))
            for k in range(1, n + 1):
                try:
                    star.shape_down(k, rate, shape[1], shape[2])
                except subprocess.CalledProcessError:
                    return  # the cell ended
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def watch_queue(b, star, cell, room, secs=25.0):
    """Under --logs: the first viewer's shaper, every 100 ms (time, bytes
    sent, packets dropped, bytes queued) into ROOM-tc.log."""
    if not b.a.logs or cell[3] != "down":
        return
    import re
    import threading

    def go():
        t0 = time.time()
        with open(os.path.join(b.a.logs, f"{room}-tc.log"), "w") as out:
            while time.time() - t0 < secs:
                r = subprocess.run(star.exec(star.hub, ["tc", "-s", "qdisc", "show", "dev", "leaf1"]),
                                   capture_output=True, text=True)
                m = re.search(r"Sent (\d+) bytes \d+ pkt \(dropped (\d+).*?backlog (\d+)b", r.stdout, re.S)
                if m is None:
                    return
                out.write(f"{time.time() - t0:.2f} {m[1]} {m[2]} {m[3]}\n")
                time.sleep(0.1)
    threading.Thread(target=go, daemon=True).start()


def relay_in(b, star):
    relay = bench.spawn(star.exec(star.hub, [b.p2p, "signal", "--listen", "0.0.0.0:0", "-q"]),
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return relay, relay.stdout.readline().strip().rsplit(":", 1)[-1]


def log_to(b, name):
    """Where a p2p process's stderr goes: a debug log under --logs, or nowhere."""
    if not b.a.logs:
        return dict(stderr=subprocess.DEVNULL)
    os.makedirs(b.a.logs, exist_ok=True)
    return dict(stderr=open(os.path.join(b.a.logs, f"{name}.log"), "w"),
                env=dict(os.environ, RUST_LOG="p2p=debug,p2p::session::rtc::media::probe=trace"))


def p2p_sender(b, star, port, room):
    return bench.spawn(star.exec(star.leaves[0], [
        b.p2p, "send", "--test-source", "--test-pattern", "zone-plate", "--width", "1280", "--height", "720",
        "--video-bitrate", "2500", "--room", room, "--signal", f"ws://{star.hub_addr(0)}:{port}", "-q",
        *(["--events-file", os.path.join(b.a.logs, f"{room}-send.events")] if b.a.logs else [])]),
        stdin=subprocess.DEVNULL, **log_to(b, f"{room}-send"))


def page_viewers(star, n, port, room):
    page = os.path.join(bench.ROOT, "tests", "browser", "watch-page.mjs")
    return [bench.spawn(star.exec(star.leaves[k], [
        "node", page, f"http://{star.hub_addr(k)}:{port}/?room={room}&nick=v{k}",
        str(SETTLE * 1000), str(WINDOW * 1000)]), stdout=subprocess.PIPE, text=True)
        for k in range(1, n + 1)]


def page_results(viewers):
    out = []
    for v in viewers:
        text, _ = v.communicate(timeout=240)
        r = json.loads(text.strip().splitlines()[-1])
        if "error" in r:
            raise RuntimeError(f"Chromium viewer: {r['error']}")
        sent = r["packetsLost"] + r["packetsReceived"]
        out.append(dict(first=r["firstFrameMs"] / 1000, fps=r["frames"] / WINDOW, gap=r["maxGapMs"] / 1000,
                        bps=r["videoBps"], width=r["width"], loss=r["packetsLost"] / sent if sent else 0.0,
                        latency=None, gap_end=r.get("maxGapEndMs"),
                        chromium={k: r.get(k) for k in ("nacks", "plis", "firs", "freezes", "freezeMs", "keyFrames",
                                                        "retransmitted", "jitterMs", "framesDropped", "steps")}))
    return out


def way_chromium(b, cell, star, port, room):
    n = cell[2]
    pub = bench.spawn(star.exec(star.leaves[0], [
        "node", os.path.join(bench.ROOT, "tests", "browser", "publish-page.mjs"),
        f"http://{star.hub_addr(0)}:{port}/?room={room}&nick=cam", str((SETTLE + WINDOW + 60) * 1000)]),
        env=dict(os.environ, FAKE_VIDEO=y4m(b)), stdout=subprocess.DEVNULL)
    time.sleep(4)
    schedule(star, cell, time.time())
    try:
        return page_results(page_viewers(star, n, port, room))
    finally:
        bench.stop(pub)


def way_page(b, cell, star, port, room):
    n = cell[2]
    tx = p2p_sender(b, star, port, room)
    time.sleep(3)
    schedule(star, cell, time.time())
    watch_queue(b, star, cell, room)
    try:
        return page_results(page_viewers(star, n, port, room))
    finally:
        bench.stop(tx)


def way_p2p(b, cell, star, port, room):
    n = cell[2]
    tx = p2p_sender(b, star, port, room)
    time.sleep(3)
    schedule(star, cell, time.time())
    watch_queue(b, star, cell, room)
    rxs = []
    try:
        for k in range(1, n + 1):
            rec = os.path.join(b.tmp, f"{room}-{k}.webm")
            ev = os.path.join(b.tmp, f"{room}-{k}.events")
            start = time.time()
            rxs.append((bench.spawn(star.exec(star.leaves[k], [
                b.p2p, "receive", "--room", room, "--record", rec, "--signal",
                f"ws://{star.hub_addr(k)}:{port}", "-q", "--events-file", ev]), stdout=subprocess.DEVNULL,
                **log_to(b, f"{room}-receive-{k}")),
                rec, ev, start))
        time.sleep(SETTLE + WINDOW + 1)
        out = []
        for proc, rec, ev, start in rxs:
            bench.stop(proc, wait=20)
            events = bench.read_events(ev)
            key = [e["ts"] for e in events if e.get("event") == "keyframe"]
            first = key[0] / 1000 - start if key else None
            fps, bps, gap, width = bench.video_window(rec, WINDOW)
            stats = [e for e in events if e.get("event") == "stats" and "packets_lost" in e]
            lat = [e["latency_ms"]["p50"] for e in stats if e.get("latency_ms")]
            out.append(dict(first=first, fps=fps, gap=gap, bps=bps, width=width,
                            loss=None, lost=stats[-1]["packets_lost"] if stats else None,
                            latency=lat[-1] if lat else None))
        return out
    finally:
        bench.stop(tx)
        for proc, *_ in rxs:
            bench.stop(proc)


def fmt(rs, k, f):
    """Each viewer's figure, "—" for one that has none."""
    return "/".join("—" if r.get(k) is None else f.format(r[k]) for r in rs) or "—"


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def worst(rs, k, pick, none):
    """One run's worst viewer: a viewer with no figure never showed a
    picture, the worst there is."""
    return pick(none if r.get(k) is None else r[k] for r in rs)


def runs_of(b):
    """Runs per cell and way: one run ranks nothing on these machines (the
    5 % loss cell ran at 11.5, 20.5 and 26.3 fps in three runs of one
    build), so the full bench takes the median of three."""
    return b.a.matrix_runs or (1 if b.quick else 3)


def link_matrix(b):
    cells = [c for c in CELLS if c[8]] if b.quick else CELLS
    if b.a.cells:
        cells = [c for c in CELLS if c[0] in b.a.cells.split(",")]
    n_runs = runs_of(b)
    results = {}
    for cell in cells:
        key, label = cell[0], cell[1]
        ways = {}
        for way, fn in (("chromium", way_chromium), ("page", way_page), ("p2p", way_p2p)):
            if way not in b.a.ways.split(","):
                ways[way] = [[dict(error="not run (--ways)")]]
                continue
            ways[way] = []
            for _ in range(n_runs):
                star = build(b, cell)
                try:
                    relay, port = relay_in(b, star)
                    room = f"m-{key}-{way}-{uuid.uuid4().hex[:6]}"
                    try:
                        got = fn(b, cell, star, port, room)
                    except Exception as e:  # one way failing must not hide the others
                        got = [dict(error=str(e))]
                    finally:
                        bench.stop(relay)
                finally:
                    bench.cleanup()
                    star.close()
                bench.log(f"  {key} {way}: {got}")
                ways[way].append(got)
        results[key] = ways
        # Runs that failed are left out; a way with none left is missing.
        ok = {w: [r for r in runs if not any("error" in v for v in r)] for w, runs in ways.items()}
        c = ok["chromium"]
        for way, name in (("p2p", "p2p → p2p"), ("page", "p2p → our page")):
            p = ok[way]
            if not p or not c:
                err = "; ".join(v["error"] for runs in (ways[way], ways["chromium"])
                                for r in runs for v in r if "error" in v)
                b.missing.append((f"10 link matrix: {label} ({name})", f"failed: {err}"))
                continue

            def each(runs, k, pick, none, f):
                vals = [worst(r, k, pick, none) for r in runs]
                return median(vals), "/".join(f.format(v) for v in vals)

            p_fps, p_fps_runs = each(p, "fps", min, 0.0, "{:.1f}")
            c_fps, c_fps_runs = each(c, "fps", min, 0.0, "{:.1f}")
            p_gap, p_gap_runs = each(p, "gap", max, float("inf"), "{:.2f}")
            c_gap, c_gap_runs = each(c, "gap", max, float("inf"), "{:.2f}")
            p_first, p_first_runs = each(p, "first", max, float("inf"), "{:.2f}")
            c_first, c_first_runs = each(c, "first", max, float("inf"), "{:.2f}")
            many = len(p) > 1 or len(c) > 1
            runs = f"median of {len(p)}, worst viewer of each run: " if many else "worst viewer: "
            lat = fmt(p[-1], "latency", "{:.0f}")
            b.row("10 link matrix", f"{label}: {name}, frames/s over {WINDOW} s after {SETTLE} s ({runs.rstrip(': ')})",
                  f"{p_fps:.1f} fps ({p_fps_runs}; {fmt(p[-1], 'width', '{}')} wide)", "",
                  baseline=f"{c_fps:.1f} fps ({c_fps_runs}; Chromium → Chromium, {fmt(c[-1], 'width', '{}')} wide)",
                  ratio=p_fps / c_fps if c_fps else None, target="≥ Chromium", met=p_fps >= c_fps * 0.97)
            b.row("10 link matrix", f"{label}: {name}, longest freeze in that window",
                  f"{p_gap:.2f} s ({p_gap_runs})", "",
                  baseline=f"{c_gap:.2f} s ({c_gap_runs})", ratio=p_gap / c_gap if c_gap else None,
                  target="≤ Chromium", met=p_gap <= max(c_gap, 0.1))
            b.row("10 link matrix", f"{label}: {name}, first picture after the viewer started"
                  + (f" (glass→receiver p50 {lat} ms)" if lat != "—" else ""),
                  f"{p_first:.2f} s ({p_first_runs})", "", baseline=f"{c_first:.2f} s ({c_first_runs})",
                  ratio=p_first / c_first if c_first else None, target="≤ Chromium + 0.2 s",
                  met=p_first <= c_first + 0.2)
    b.raw["link_matrix"] = results
