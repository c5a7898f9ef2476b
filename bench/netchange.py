"""Figure 11 of bench/run.py: a network change (issue 27).

A viewer watches a sender through a router (the hub namespace). Mid-way,
the viewer's address moves to another subnet, as a laptop's does when it
goes from Wi-Fi to a phone's hotspot: a new address and default route
come, the old address goes. Run three ways, one after the other, through
the same namespaces:

- Chromium → Chromium: our page publishing in one headless Chromium and
  watching in another (web/p2p.js: the seed library's Sender, which does
  not restart ICE, so its viewer gets a new connection when it asks
  again);
- `p2p send` → our page in headless Chromium;
- `p2p send` → `p2p receive --record`.

Measured: the longest freeze of the picture in a window that holds the
move (how long the viewer had no picture), and whether the picture came
back in it at all.
"""

import os
import subprocess
import threading
import time
import uuid

import __main__ as bench  # bench/run.py: spawn, stop, cleanup, log, …
import matrix

SETTLE, WINDOW = 8, 30  # s after the first frame, then the watched window
MOVE_AT = 4  # s into the window: the viewer's address moves


def move(star, k):
    """Moves leaf k to 10.236.{k+1}.2/24 (the hub answers on .1 there)."""
    new_hub, new_leaf = f"10.236.{k + 1}.1", f"10.236.{k + 1}.2"
    run = matrix.WanStar._run
    run("ip", "-n", star.hub, "addr", "add", f"{new_hub}/24", "dev", f"leaf{k}")
    run("ip", "-n", star.leaves[k], "addr", "add", f"{new_leaf}/24", "dev", "eth0")
    run("ip", "-n", star.leaves[k], "route", "replace", "default", "via", new_hub)
    run("ip", "-n", star.leaves[k], "addr", "del", f"{star.leaf_addr(k)}/24", "dev", "eth0")


def move_later(star, k, at):
    """Moves leaf k at time `at` (epoch seconds), in the background."""
    def go():
        time.sleep(max(0.0, at - time.time()))
        try:
            move(star, k)
            t = time.time()
            bench.log(f"  moved at {time.strftime('%H:%M:%S', time.gmtime(t))}.{int(t * 1000) % 1000:03d} UTC")
        except subprocess.CalledProcessError as e:
            bench.log(f"  move failed: {e}")
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def viewer_page(star, port, room):
    page = os.path.join(bench.ROOT, "tests", "browser", "watch-page.mjs")
    return bench.spawn(star.exec(star.leaves[1], [
        "node", page, f"http://{star.hub_addr(1)}:{port}/?room={room}&nick=v1",
        str(SETTLE * 1000), str(WINDOW * 1000)]), stdout=subprocess.PIPE, text=True)


def page_result(star, viewer, started):
    # The page shows its first frame within a few seconds; the window
    # starts SETTLE s after it. Move MOVE_AT s into the window.
    move_later(star, 1, started + 3 + SETTLE + MOVE_AT)
    r = matrix.page_results([viewer])[0]
    # The freeze that holds the move, or the window's end if the picture
    # never came back.
    back = r["gap_end"] is None or r["gap_end"] < WINDOW * 1000 - 50
    # (The page's connection steps, for the log: when it asked, when ICE came back.)
    return dict(freeze=r["gap"], back=back, fps=r["fps"], steps=r["chromium"]["steps"])


def way_chromium(b, star, port, room):
    pub = bench.spawn(star.exec(star.leaves[0], [
        "node", os.path.join(bench.ROOT, "tests", "browser", "publish-page.mjs"),
        f"http://{star.hub_addr(0)}:{port}/?room={room}&nick=cam", str((SETTLE + WINDOW + 60) * 1000)]),
        env=dict(os.environ, FAKE_VIDEO=matrix.y4m(b)), stdout=subprocess.DEVNULL)
    time.sleep(4)
    try:
        return page_result(star, viewer_page(star, port, room), time.time())
    finally:
        bench.stop(pub)


def way_page(b, star, port, room):
    tx = matrix.p2p_sender(b, star, port, room)
    time.sleep(3)
    try:
        return page_result(star, viewer_page(star, port, room), time.time())
    finally:
        bench.stop(tx)


def frame_times(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "packet=pts_time", "-of", "csv=p=0", path],
                         capture_output=True, text=True, timeout=60).stdout
    times = []
    for line in out.splitlines():
        try:
            times.append(float(line.split(",")[0]))
        except ValueError:
            continue
    return sorted(times)


def way_p2p(b, star, port, room):
    tx = matrix.p2p_sender(b, star, port, room)
    time.sleep(3)
    rec = os.path.join(b.tmp, f"{room}.webm")
    ev = os.path.join(b.tmp, f"{room}.events")
    rx = bench.spawn(star.exec(star.leaves[1], [
        b.p2p, "receive", "--room", room, "--record", rec, "--signal", f"ws://{star.hub_addr(1)}:{port}",
        "-q", "--events-file", ev]), stdout=subprocess.DEVNULL, **matrix.log_to(b, f"{room}-receive"))
    started = time.time()
    try:
        move_later(star, 1, started + 3 + SETTLE + MOVE_AT)
        time.sleep(3 + SETTLE + WINDOW)
        bench.stop(rx, wait=20)
        times = frame_times(rec)
        if len(times) < 2:
            raise RuntimeError(f"no video in {rec}")
        # The recording spans the whole visit, the time without a picture
        # a gap in it. The picture is back if frames follow the gap.
        gaps = [(b2 - a, b2) for a, b2 in zip(times, times[1:])]
        freeze, end = max(gaps)
        events = bench.read_events(ev)
        files = [e for e in events if e.get("event") == "connect"]
        return dict(freeze=freeze, back=end < times[-1] or freeze < 1.0,
                    fps=len(times) / (times[-1] - times[0]), connects=len(files))
    finally:
        bench.stop(tx)
        bench.stop(rx)


def network_change(b):
    n_runs = 1 if b.quick else 3
    ways = {}
    for way, fn in (("chromium", way_chromium), ("page", way_page), ("p2p", way_p2p)):
        if way not in b.a.ways.split(","):
            continue
        ways[way] = []
        for _ in range(n_runs):
            star = matrix.WanStar(2, b.wan, {0: "", 1: ""})
            try:
                relay, port = matrix.relay_in(b, star)
                room = f"move-{way}-{uuid.uuid4().hex[:6]}"
                try:
                    got = fn(b, star, port, room)
                except Exception as e:  # one way failing must not hide the others
                    got = dict(error=str(e))
                finally:
                    bench.stop(relay)
            finally:
                bench.cleanup()
                star.close()
            bench.log(f"  move {way}: {got}")
            ways[way].append(got)
    b.raw["network_change"] = ways
    ok = {w: [r for r in runs if "error" not in r] for w, runs in ways.items()}
    c = ok.get("chromium", [])

    def show(runs):
        return "/".join(f"{r['freeze']:.1f}" + ("" if r["back"] else "+") for r in runs)

    for way, name in (("p2p", "p2p → p2p"), ("page", "p2p → our page")):
        p = ok.get(way, [])
        if not p or not c:
            err = "; ".join(r["error"] for w in (way, "chromium") for r in ways.get(w, []) if "error" in r)
            b.missing.append((f"11 network change ({name})", f"failed: {err or 'not run'}"))
            continue
        p_freeze = matrix.median([r["freeze"] for r in p])
        c_freeze = matrix.median([r["freeze"] for r in c])
        b.row("11 network change",
              f"the viewer's address moves to another subnet: {name}, longest time without a picture "
              f"(median of {len(p)}; + = not back within the {WINDOW} s window)",
              f"{p_freeze:.1f} s ({show(p)})", "",
              baseline=f"{c_freeze:.1f} s ({show(c)}; Chromium → Chromium)",
              ratio=p_freeze / c_freeze if c_freeze else None, target="≤ 3 s",
              met=p_freeze <= 3.0 and all(r["back"] for r in p))
