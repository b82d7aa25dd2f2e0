// Headless Chromium pages chat through the gateway with the devnet chat canister (run by test_browser_chat.py).
//
// Usage: node browser_chat.mjs '<json>' with {page_url, chromium, screenshot}: the served examples/chat-web page,
// the Chromium executable, and where to save a screenshot of the first page at the end.
// Each page has its own browser context, so its own secp256k1 identity and IcWebSocket sessions.
//
// alice and bob chat; carol joins late and sees what they said (the canister's history); each page marks its own
// messages. Then the gateway restarts, driven by the test over stdin/stdout: this script prints "stop the gateway"
// and waits for a "stopped" line, checks that every page says why it lost the gateway and retries, prints "start
// the gateway" and waits for "started"; every page must reconnect by itself, chat again, and show each message
// once. Every wait is for a state of the page, never a fixed time. Exits non-zero on failure.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const cfg = JSON.parse(process.argv[2]);
const TIMEOUT_MS = 90_000;
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function expectLine(expected) {
  const { value, done } = await stdinLines.next();
  check(!done && value === expected, `expected "${expected}" on stdin, got ${done ? 'its end' : `"${value}"`}`);
}

const browser = await chromium.launch({
  executablePath: cfg.chromium,
  // --headless from Playwright; the rest keeps Chromium off the network and away from GPU and sandbox needs.
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const failedResponses = [];

async function openPage(name) {
  const page = await (await browser.newContext()).newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  page.on('console', msg => console.log(`[${name} console.${msg.type()}] ${msg.text()}`));
  page.on('pageerror', err => console.log(`[${name} pageerror] ${err}`));
  page.on('response', response => {
    if (response.status() >= 400) failedResponses.push(`${name}: ${response.status()} ${response.url()}`);
  });
  await page.goto(`${cfg.page_url}?name=${name}`);
  // Every status the page shows, in order: a restart passes through several within seconds.
  await page.evaluate(() => {
    window.statusLog = [];
    const status = document.getElementById('status');
    new MutationObserver(() => window.statusLog.push(status.textContent)).observe(status, { childList: true });
  });
  await waitUntilOpen({ name, page });
  return { name, page };
}

// Open, with the canister's history merged into the list.
async function waitUntilOpen({ page }) {
  await page.waitForSelector('body[data-state="open"][data-history="loaded"]');
}

async function say({ name, page }, words) {
  await page.fill('#text', `${words} from ${name}`);
  await page.click('#send');
}

// The texts a page shows, in order, and which are marked as its own.
async function shown({ page }) {
  return page.$$eval('#messages li', items =>
    items.map(item => ({ id: BigInt(item.dataset.id), text: item.textContent, own: item.classList.contains('own') })),
  );
}

// Each page shows exactly `lines` ("name: words from name"), once each, in id order, its own marked.
async function expectMessages(pages, lines) {
  for (const viewer of pages) {
    for (const line of lines) await viewer.page.waitForSelector(`#messages li:has-text("${line}")`);
    const items = await shown(viewer);
    for (const line of lines) {
      const matching = items.filter(item => item.text.includes(line));
      const texts = JSON.stringify(items.map(item => item.text));
      check(matching.length === 1, `${viewer.name} shows "${line}" ${matching.length} times: ${texts}`);
      const own = line.startsWith(`${viewer.name}:`);
      check(matching[0].own === own, `${viewer.name}: "${line}" is ${own ? 'not ' : ''}marked as its own`);
    }
    check(items.length === lines.length, `${viewer.name} shows ${items.length} messages, expected ${lines.length}`);
    check(items.every((item, n) => n === 0 || items[n - 1].id < item.id), `${viewer.name}: messages out of id order`);
  }
}

async function waitForStatus({ name, page }, words) {
  try {
    await page.waitForFunction(w => window.statusLog.some(text => text.includes(w)), words);
  } catch (err) {
    const log = await page.evaluate(() => window.statusLog);
    throw new Error(`${name} never showed "${words}"; it showed ${JSON.stringify(log)}`);
  }
}

try {
  const alice = await openPage('alice');
  const bob = await openPage('bob');
  await say(alice, 'hello');
  await expectMessages([alice, bob], ['alice: hello from alice']);
  await say(bob, 'hello');
  const hellos = ['alice: hello from alice', 'bob: hello from bob'];
  await expectMessages([alice, bob], hellos);

  // A late joiner sees what was said before it came.
  const carol = await openPage('carol');
  const pages = [alice, bob, carol];
  await expectMessages([carol], hellos);

  // The favicon is an inline SVG that the browser can draw.
  const iconWidth = await alice.page.evaluate(async () => {
    const image = new Image();
    image.src = document.querySelector('link[rel="icon"]').href;
    await image.decode();
    return image.naturalWidth;
  });
  check(iconWidth > 0, 'the favicon does not decode');

  console.log('stop the gateway');
  await expectLine('stopped');
  for (const page of pages) {
    // The drain's close (1001) in words and raw, then a retry that finds no gateway.
    await waitForStatus(page, 'the gateway restarted or is shutting down (1001: gateway shutting down)');
    await waitForStatus(page, 'Reconnecting in');
    await waitForStatus(page, 'cannot reach the gateway (1006)');
  }
  console.log('start the gateway');
  await expectLine('started');
  for (const page of pages) await waitUntilOpen(page);

  // A text longer than the canister takes, set by a script (the input's maxlength only binds typing): the canister
  // traps, the gateway closes the session, the page says so and reconnects; nobody shows the text.
  await bob.page.evaluate(() => {
    document.getElementById('text').value = 'x'.repeat(1000);
  });
  await bob.page.click('#send');
  await waitForStatus(bob, 'the canister rejected a message (1011: ws_message failed: rejected');
  await waitUntilOpen(bob);

  for (const page of pages) await say(page, 'again');
  // The history fetched on reconnect repeats the hellos: still shown once, and the identity is kept.
  await expectMessages(pages, [...hellos, ...pages.map(({ name }) => `${name}: again from ${name}`)]);

  for (const { name, page } of pages) {
    console.log(`${name} statuses: ${JSON.stringify(await page.evaluate(() => window.statusLog))}`);
  }
  check(failedResponses.length === 0, `failed responses: ${failedResponses.join(', ')}`);
  mkdirSync(dirname(cfg.screenshot), { recursive: true });
  await alice.page.screenshot({ path: cfg.screenshot, fullPage: true });
  console.log('ok browser chat');
} finally {
  await browser.close();
}
