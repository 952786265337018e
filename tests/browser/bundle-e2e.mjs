#!/usr/bin/env node
// End-to-end run of the bundle page in headless Chromium (playwright-core):
// fill the form, watch the live progress, download the zip once, and check
// that the link then refuses a second download.
//
//   BASE_URL=http://127.0.0.1:3000 API_KEY=ordk_… BUNDLE_URLS='["http://…/a.jpg", …]' OUT_DIR=/tmp/out \
//     [TIMEOUT_MS=120000] [CHROMIUM=/usr/bin/chromium] node tests/browser/bundle-e2e.mjs
//
// Writes OUT_DIR/bundle.zip, OUT_DIR/bundle-page.png and OUT_DIR/bundle-trace.json
// (the page's window.bundleTrace). Logs go to stderr; the last line on stdout is
// `E2E_RESULT {json}`. Exit 0 when every check passed, 1 otherwise.
import fs from 'node:fs/promises';
import path from 'node:path';
import { chromium } from 'playwright-core';

const started = Date.now();
const failures = [];
const result = {
  ok: false, files: [], progress_events: 0, clock_events: 0, second_status: null,
  screenshot: null, zip: null, zip_entries: null, bundle_id: null, elapsed_ms: 0, failures,
};
let step = 'start';
let browser = null;
let page = null; // for the snapshot after a failure
const log = (message) => process.stderr.write(`[bundle-e2e +${Date.now() - started}ms] ${message}\n`);
const check = (ok, message) => { if (!ok) failures.push(message); return ok; };

function config() {
  const base = (process.env.BASE_URL || '').replace(/\/+$/, '');
  if (!/^https?:\/\//.test(base)) throw new Error('BASE_URL must be set, e.g. http://127.0.0.1:3000');
  let urls;
  try { urls = JSON.parse(process.env.BUNDLE_URLS || ''); } catch { urls = null; }
  if (!Array.isArray(urls) || urls.length === 0 || !urls.every((u) => typeof u === 'string' && u)) {
    throw new Error('BUNDLE_URLS must be a JSON array of URL strings');
  }
  if (!process.env.OUT_DIR) throw new Error('OUT_DIR must be set');
  const timeout = Number(process.env.TIMEOUT_MS || 120000);
  if (!(timeout > 0)) throw new Error('TIMEOUT_MS must be a positive number of milliseconds');
  return { base, urls, outDir: path.resolve(process.env.OUT_DIR), timeout, executable: process.env.CHROMIUM || '/usr/bin/chromium' };
}

/// Names of the entries of a zip, from its central directory.
function zipEntries(buffer) {
  const min = Math.max(0, buffer.length - 22 - 65535);
  let end = -1;
  for (let at = buffer.length - 22; at >= min; at--) if (buffer.readUInt32LE(at) === 0x06054b50) { end = at; break; }
  if (end < 0) throw new Error('no end-of-central-directory record: not a zip');
  const count = buffer.readUInt16LE(end + 10);
  let at = buffer.readUInt32LE(end + 16);
  const names = [];
  for (let i = 0; i < count; i++) {
    if (buffer.readUInt32LE(at) !== 0x02014b50) throw new Error(`bad central directory entry ${i}`);
    const nameLength = buffer.readUInt16LE(at + 28), extra = buffer.readUInt16LE(at + 30), comment = buffer.readUInt16LE(at + 32);
    names.push(buffer.toString('utf8', at + 46, at + 46 + nameLength));
    at += 46 + nameLength + extra + comment;
  }
  return names;
}

async function run({ base, urls, outDir, deadline, executable }) {
  const left = () => Math.max(1000, deadline - Date.now());
  await fs.mkdir(outDir, { recursive: true });

  step = 'launch';
  browser = await chromium.launch({
    executablePath: executable,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
    timeout: Math.min(left(), 60000),
  });
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1024, height: 768 } });
  page = await context.newPage();
  page.setDefaultTimeout(30000);
  page.on('pageerror', (error) => failures.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() !== 'error' && message.type() !== 'warning') return;
    log(`console ${message.type()}: ${message.text()}`);
    if (/Content Security Policy/i.test(message.text())) failures.push(`CSP violation: ${message.text()}`);
  });
  let created = null;
  page.on('response', async (response) => {
    if (response.request().method() === 'POST' && new URL(response.url()).pathname === '/bundles' && response.status() === 202) {
      created = await response.json().catch(() => null);
      result.bundle_id = created && created.id;
    }
  });

  step = 'open the page';
  const response = await page.goto(`${base}/bundles/new`, { waitUntil: 'load', timeout: left() });
  if (!response || response.status() !== 200) throw new Error(`GET /bundles/new answered ${response && response.status()}`);

  step = 'the page asks for an API key';
  const apiKey = process.env.API_KEY || '';
  if (!apiKey) throw new Error('API_KEY must be set (a key with the bundles scope)');
  await page.locator('#key-form').waitFor({ state: 'visible', timeout: left() });
  await page.locator('#api-key').fill(`ordk_${'0'.repeat(64)}`);
  await page.locator('#use-key').click();
  check(await page.locator('#key-form').isHidden(), 'the key form stayed open after a well-formed key');

  step = 'fill the form';
  const fields = page.locator('#bundle-form input[name="url"]');
  while (await fields.count() < urls.length) {
    const add = page.locator('#add-url');
    if (await add.isDisabled()) throw new Error(`the form allows only ${await fields.count()} URLs, ${urls.length} given`);
    await add.click();
  }
  for (const [i, url] of urls.entries()) await fields.nth(i).fill(url);
  await page.locator('#submit').click();

  step = 'an unknown key is refused and asked for again';
  await page.waitForFunction(() => {
    const form = document.querySelector('#key-form');
    return form && !form.hidden && document.querySelector('#key-error').textContent.length > 0;
  }, null, { timeout: left(), polling: 100 });
  check(await page.evaluate(() => sessionStorage.getItem('orders-api-key')) === null, 'a refused key stayed in session storage');
  await page.locator('#api-key').fill(apiKey);
  await page.locator('#use-key').click(); // submits the bundle again, with this key

  step = 'wait for the link';
  const outcome = await page.waitForFunction(() => {
    const visible = (el) => el && el.offsetParent !== null;
    const status = document.querySelector('#bundle-status');
    const error = document.querySelector('#error');
    if (visible(document.querySelector('#download-link'))) return { ready: true };
    if (status && visible(status) && /^failed/.test(status.textContent)) return { failed: status.textContent };
    const invalid = [...document.querySelectorAll('.field-error')].map((e) => e.textContent).filter(Boolean);
    if (visible(error) && error.textContent && !document.querySelector('#bundle-form[aria-busy]')) {
      return { refused: [error.textContent, ...invalid].join(' | ') };
    }
    return false;
  }, null, { timeout: left(), polling: 100 }).then((handle) => handle.jsonValue());
  if (outcome.refused) throw new Error(`the form was refused: ${outcome.refused}`);
  if (outcome.failed) throw new Error(`the bundle ${outcome.failed}`);
  step = 'wait for the clock to tick after ready';
  await page.waitForFunction(() => {
    const ready = window.bundleTrace.find((e) => e.type === 'ready');
    const clocks = window.bundleTrace.filter((e) => e.type === 'clock');
    return ready && clocks.length >= 3 && clocks.some((e) => e.t > ready.t);
  }, null, { timeout: left(), polling: 200 });
  const trace = await page.evaluate(() => window.bundleTrace);
  await fs.writeFile(path.join(outDir, 'bundle-trace.json'), JSON.stringify(trace, null, 1));

  check(await page.evaluate(() => sessionStorage.getItem('orders-api-key')) === apiKey, 'the key was not kept in session storage');
  check(await page.evaluate(() => localStorage.length) === 0, 'something was written to local storage');

  step = 'check the events';
  const progress = trace.filter((e) => e.type === 'progress');
  const clocks = trace.filter((e) => e.type === 'clock').map((e) => Number(e.data.unix_ms ?? Date.parse(e.data.now)));
  result.progress_events = progress.length;
  result.clock_events = clocks.length;
  check(progress.some(({ data: d }) => d.total > 0 && d.received > 0 && d.received < d.total),
    `no intermediate progress event (0 < received < total) among ${progress.length} progress events`);
  check(trace.some((e) => e.type === 'compress'), 'no compress event');
  check(trace.some((e) => e.type === 'ready'), 'no ready event');
  check(clocks.length >= 3 && clocks.every((t, i) => Number.isFinite(t) && (i === 0 || t > clocks[i - 1])),
    `clock events not increasing: ${JSON.stringify(clocks)}`);
  check(/server time \d\d:\d\d:\d\d UTC/.test(await page.locator('#clock').textContent()), 'the clock shows no time');

  step = 'check the rows';
  const rows = await page.$$eval('#file-list .file-row', (list) => list.map((row) => {
    const bar = row.querySelector('.file-progress');
    return {
      index: Number(row.dataset.index), url: row.querySelector('.file-url').textContent,
      text: row.querySelector('.file-status').textContent, value: bar.value, max: bar.max, determinate: bar.hasAttribute('value'),
    };
  }));
  check(rows.length === urls.length, `${rows.length} rows for ${urls.length} URLs`);
  const state = created && created.state
    ? await page.request.get(new URL(created.state, base).href, { timeout: left(), headers: { authorization: `Bearer ${apiKey}` } }).then((r) => r.json()).catch(() => null)
    : null;
  check(state && state.status === 'ready', `GET state: ${state ? state.status : 'unavailable'}`);
  for (const [i, url] of urls.entries()) {
    const row = rows.find((r) => r.index === i);
    const known = state && state.files && state.files[i];
    const failedEvent = trace.find((e) => e.type === 'download_failed' && e.data.index === i);
    const file = {
      index: i,
      status: known ? known.status : row && row.text.startsWith('done') ? 'done' : row && row.text.startsWith('failed') ? 'failed' : 'unknown',
      name: known ? known.name : row && row.text.startsWith('done') ? row.text.replace(/^done — /, '') : null,
      error: known ? known.error : failedEvent ? failedEvent.data.error : null,
    };
    result.files.push(file);
    if (!check(row, `no row for URL ${i}`)) continue;
    check(row.url === url, `row ${i} shows ${row.url}, not ${url}`);
    if (file.status === 'done') {
      check(row.text === `done — ${file.name}`, `row ${i} says "${row.text}", expected "done — ${file.name}"`);
      check(row.determinate && row.value === row.max, `row ${i} bar not full (${row.value}/${row.max})`);
    } else if (file.status === 'failed') {
      check(row.text.startsWith('failed: '), `row ${i} says "${row.text}", expected "failed: …"`);
    } else {
      check(false, `URL ${i} ended ${file.status} ("${row.text}")`);
    }
  }
  const done = result.files.filter((f) => f.status === 'done').length;
  check(await page.locator('#compress-progress').evaluate((bar) => bar.value === 100), 'compression bar not at 100');
  const linkText = await page.locator('#download-link').textContent();
  check(linkText.includes(`(${done} file`), `link says "${linkText}", expected ${done} files`);

  step = 'screenshot';
  result.screenshot = path.join(outDir, 'bundle-page.png');
  await page.screenshot({ path: result.screenshot, fullPage: true, timeout: left() });

  step = 'download';
  const href = await page.locator('#download-link').evaluate((a) => a.href);
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: left() }),
    page.locator('#download-link').click(),
  ]);
  const zipPath = path.join(outDir, 'bundle.zip');
  await download.saveAs(zipPath);
  const failure = await download.failure();
  if (failure) throw new Error(`the download failed: ${failure}`);
  result.zip = zipPath;
  const bytes = await fs.readFile(zipPath);
  try {
    result.zip_entries = zipEntries(bytes);
    check(result.zip_entries.length === done, `the zip has ${result.zip_entries.length} entries, ${done} files were downloaded`);
    const names = result.files.filter((f) => f.status === 'done').map((f) => f.name).sort();
    check(JSON.stringify([...result.zip_entries].sort()) === JSON.stringify(names),
      `zip entries ${JSON.stringify(result.zip_entries)} differ from the downloaded names ${JSON.stringify(names)}`);
  } catch (error) {
    check(false, `bundle.zip (${bytes.length} bytes): ${error.message}`);
  }
  check(await page.locator('#result').evaluate((el) => /link used/.test(el.textContent) && el.querySelector('#link-used').offsetParent !== null),
    'the page does not mark the link as used');
  check((await page.locator('#download-link').getAttribute('href')) !== null, 'the link lost its href after the click');

  step = 'second download';
  const second = await page.request.get(href, { timeout: left(), maxRedirects: 0 });
  result.second_status = second.status();
  check(second.status() === 403 || second.status() === 410, `the second download answered ${second.status()}, expected 403 or 410`);
}

/// After a failed run: what the page showed, for the person reading the CI log.
async function snapshot(outDir, urls) {
  if (!page) return;
  const bounded = (promise) => Promise.race([promise, new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
  try {
    const trace = await bounded(page.evaluate(() => window.bundleTrace || []));
    if (trace) await fs.writeFile(path.join(outDir, 'bundle-trace.json'), JSON.stringify(trace, null, 1));
    result.progress_events = (trace || []).filter((e) => e.type === 'progress').length;
    result.clock_events = (trace || []).filter((e) => e.type === 'clock').length;
    const rows = await bounded(page.$$eval('#file-list .file-row', (list) => list.map((row) => row.querySelector('.file-status').textContent)));
    if (rows && result.files.length === 0) {
      result.files = urls.map((url, index) => {
        const text = rows[index] || '';
        const failed = (trace || []).find((e) => e.type === 'download_failed' && e.data.index === index);
        const status = text.startsWith('done') ? 'done' : text.startsWith('failed') ? 'failed' : text ? 'unfinished' : 'unknown';
        return { index, status, name: status === 'done' ? text.replace(/^done — /, '') : null, error: failed ? failed.data.error : null };
      });
    }
    const shot = path.join(outDir, 'bundle-page-failure.png');
    await bounded(page.screenshot({ path: shot, fullPage: true, timeout: 5000 }));
    log(`failure snapshot: ${shot}`);
  } catch (error) {
    log(`no failure snapshot: ${error.message.split('\n')[0]}`);
  }
}

async function closeBrowser() {
  if (!browser) return;
  const closing = browser.close().catch(() => {});
  browser = null;
  await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 10000).unref())]);
}

function finish(code) {
  result.ok = code === 0 && failures.length === 0;
  result.elapsed_ms = Date.now() - started;
  for (const failure of failures) process.stderr.write(`FAILED: ${failure}\n`);
  process.stdout.write(`E2E_RESULT ${JSON.stringify(result)}\n`);
  process.exit(result.ok ? 0 : 1);
}

async function main() {
  let settings;
  try {
    settings = config();
  } catch (error) {
    failures.push(`configuration: ${error.message}`);
    return finish(1);
  }
  const deadline = started + settings.timeout;
  const watchdog = setTimeout(async () => {
    failures.push(`timed out after ${settings.timeout} ms while: ${step}`);
    await closeBrowser();
    finish(1);
  }, settings.timeout);
  try {
    await run({ ...settings, deadline });
    log(`passed the run, ${failures.length} failed checks`);
  } catch (error) {
    failures.push(`${step}: ${error.message.split('\n')[0]}`);
    await snapshot(settings.outDir, settings.urls);
  }
  clearTimeout(watchdog);
  await closeBrowser();
  finish(failures.length ? 1 : 0);
}

main();
