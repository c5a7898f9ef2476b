// Shared by the browser tests: the real `p2p` binary as child processes with
// captured output, headless Chromium through playwright-core, bounded waits
// whose failure messages carry every process's stderr and the page's console.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const p2pBin = path.resolve(repoRoot, process.env.P2P_BIN || 'target/debug/p2p');
export const chromiumBin = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const screenshotDir = path.join(repoRoot, 'out', 'browser');

/** A child process whose stdout/stderr are kept for assertions and failure reports. */
export class Proc {
  constructor(name, cmd, args, opts = {}) {
    this.name = name;
    this.cmdline = [cmd, ...args].join(' ');
    this.stdout = '';
    this.stderr = '';
    this.exit = null;
    this.child = spawn(cmd, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH, HOME: process.env.HOME, RUST_BACKTRACE: '1', ...opts.env },
      cwd: opts.cwd,
    });
    this.child.stdout.setEncoding('utf8');
    this.child.stderr.setEncoding('utf8');
    this.child.stdout.on('data', (d) => { this.stdout += d; });
    this.child.stderr.on('data', (d) => { this.stderr += d; });
    this.child.stdin.on('error', () => {}); // EPIPE if it exits first: reported through its output
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
      this.child.on('error', (error) => {
        this.exit = { error };
        resolve(this.exit);
      });
    });
  }

  write(text) {
    this.child.stdin.write(text);
  }

  /** JSON event lines (`--events json`) seen so far on stderr. */
  events() {
    const out = [];
    for (const line of this.stderr.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line));
      } catch (e) {
        /* a partial line */
      }
    }
    return out;
  }

  report() {
    const tail = (s) => (s.length > 6000 ? `…${s.slice(-6000)}` : s);
    return `--- ${this.name}: ${this.cmdline}\n` +
      `exit: ${this.exit ? JSON.stringify(this.exit) : 'running'}\n` +
      `stdout:\n${tail(this.stdout)}\nstderr:\n${tail(this.stderr)}`;
  }

  async stop(signal = 'SIGINT', graceMs = 5000) {
    if (this.exit) return this.exit;
    // `p2p send` keeps reading stdin and does not act on a lone SIGINT while
    // stdin is open (see README.md here): end stdin first, as a terminal's
    // Ctrl-C would by stopping the whole pipeline.
    this.child.stdin.end();
    this.child.kill(signal);
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
    return this.exit;
  }
}

/** Collects everything a test started, for failure reports and teardown. */
export class Session {
  constructor(name) {
    this.name = name;
    this.procs = [];
    this.pages = [];
    this.consoles = [];
    this.browser = null;
    this.tmp = mkdtempSync(path.join(tmpdir(), `p2p-browser-${name}-`));
  }

  p2p(name, args) {
    const p = new Proc(name, p2pBin, args);
    this.procs.push(p);
    return p;
  }

  /** Starts `p2p signal` on a free port; returns {url, http}. */
  async relay(extraArgs = []) {
    const relay = this.p2p('relay', ['signal', '--listen', '127.0.0.1:0', ...extraArgs]);
    await this.waitFor(() => /^wss?:\/\/\S+/m.test(relay.stdout), 10000, 'the relay to print its URL');
    const url = relay.stdout.match(/^(wss?:\/\/\S+)/m)[1].replace(/\/$/, '');
    this.relayUrl = url;
    return { url, http: url.replace(/^ws/, 'http') };
  }

  /** The page URL for `room`: served by the relay, or by P2P_PAGE_BASE (then told the relay URL). */
  pageUrl(room, extra = {}) {
    const override = process.env.P2P_PAGE_BASE;
    const base = override ? override.replace(/\/$/, '') : this.relayUrl.replace(/^ws/, 'http');
    const q = new URLSearchParams({ room, ...extra });
    if (override) q.set('signal', this.relayUrl);
    return `${base}/?${q}`;
  }

  /**
   * `allowHosts`: hosts besides localhost the browser may reach (nothing else
   * resolves). `secureOrigins`: plain-http origins to treat as secure (the
   * camera needs a secure context; only localhost is one by default).
   */
  async browserStart({
    fakeUi = '--use-fake-ui-for-media-stream', allowHosts = [], secureOrigins = [], fakeVideo = null,
  } = {}) {
    const userDataDir = path.join(this.tmp, 'chromium-profile');
    mkdirSync(userDataDir, { recursive: true });
    this.context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: chromiumBin,
      headless: true,
      viewport: { width: 1280, height: 800 },
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--use-fake-device-for-media-stream',
        fakeUi,
        `--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1${
          allowHosts.map((h) => `, EXCLUDE ${h}`).join('')}`,
        // Never multicast mDNS: host candidates as plain addresses.
        '--disable-features=WebRtcHideLocalIpsWithMdns',
        '--allow-loopback-in-peer-connection',
        '--autoplay-policy=no-user-gesture-required',
        ...(secureOrigins.length ? [`--unsafely-treat-insecure-origin-as-secure=${secureOrigins.join(',')}`] : []),
        // The fake camera plays this .y4m (looped) instead of its own picture.
        ...(fakeVideo ? [`--use-file-for-fake-video-capture=${fakeVideo}`] : []),
      ],
    });
    return this.context;
  }

  async page(url, label) {
    const page = await this.context.newPage();
    page.on('console', (m) => this.consoles.push(`[${label}] ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => this.consoles.push(`[${label}] pageerror: ${e.message}`));
    this.pages.push({ page, label });
    await page.goto(url);
    return page;
  }

  report() {
    const console = this.consoles.slice(-80).join('\n');
    return `\n${this.procs.map((p) => p.report()).join('\n')}\n--- browser console:\n${console}\n`;
  }

  /** Polls `predicate` (sync or async) until true, or fails with everything we know. */
  async waitFor(predicate, timeoutMs, what) {
    const deadline = Date.now() + timeoutMs;
    let last;
    for (;;) {
      try {
        if (await predicate()) return;
      } catch (e) {
        last = e;
      }
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}` +
          `${last ? ` (last error: ${last.message})` : ''}${this.report()}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async screenshot(page, name) {
    mkdirSync(screenshotDir, { recursive: true });
    const file = path.join(screenshotDir, `${name}.png`);
    await page.screenshot({ path: file });
    return file;
  }

  async close() {
    await this.context?.close().catch(() => {});
    for (const p of this.procs.slice().reverse()) await p.stop('SIGINT', 3000);
    if (!process.env.P2P_KEEP_TMP) rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** In the page: counts decoded frames of `video` for `ms` with requestVideoFrameCallback. */
export async function countFrames(page, selector, ms) {
  return page.evaluate(async ({ selector, ms }) => {
    const video = document.querySelector(selector);
    if (!video) throw new Error(`no element ${selector}`);
    let frames = 0;
    let maxGapMs = 0;
    let maxGapEndMs = 0;
    const start = performance.now();
    let last = start;
    await new Promise((resolve) => {
      const step = (now) => {
        if (now - last > maxGapMs) {
          maxGapMs = now - last;
          maxGapEndMs = now - start;
        }
        last = now;
        if (now - start >= ms) return resolve();
        frames++;
        video.requestVideoFrameCallback(step);
      };
      video.requestVideoFrameCallback(step);
      setTimeout(resolve, ms + 500);
    });
    // A picture that stopped for good shows as a gap up to the end.
    const end = Math.min(performance.now(), start + ms);
    if (end - last > maxGapMs) {
      maxGapMs = end - last;
      maxGapEndMs = end - start;
    }
    return { frames, maxGapMs, maxGapEndMs, width: video.videoWidth, height: video.videoHeight };
  }, { selector, ms });
}

/** Sends a chat line from the page, as a user would. */
export async function chat(page, text) {
  await page.fill('#chat-input', text);
  await page.click('#chat-form button[type=submit]');
}

/** Chat lines shown in the page: [{nick, text}]. */
export async function chatLines(page) {
  return page.$$eval('#chat-log .chat-line', (lis) => lis.map((li) => ({
    nick: li.querySelector('.nick').textContent,
    text: li.querySelector('.text').textContent,
  })));
}
