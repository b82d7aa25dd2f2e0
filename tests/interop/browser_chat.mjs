// Two headless Chromium pages chat through the gateway with the devnet chat canister (run by test_browser_chat.py).
//
// Usage: node browser_chat.mjs '<json>' with {page_url, chromium, screenshot}: the served examples/chat-web page,
// the Chromium executable, and where to save a screenshot of the first page once both messages are in.
// Each page has its own browser context, so its own secp256k1 identity and IcWebSocket. Exits non-zero on failure.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { chromium } from 'playwright-core';

const cfg = JSON.parse(process.argv[2]);
const TIMEOUT_MS = 60_000;

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
try {
  const pages = [];
  for (const name of ['alice', 'bob']) {
    const page = await (await browser.newContext()).newPage();
    page.setDefaultTimeout(TIMEOUT_MS);
    page.on('console', msg => console.log(`[${name} console.${msg.type()}] ${msg.text()}`));
    page.on('pageerror', err => console.log(`[${name} pageerror] ${err}`));
    await page.goto(`${cfg.page_url}?name=${name}`);
    pages.push({ name, page });
  }
  for (const { page } of pages) await page.waitForSelector('body[data-state="open"]');
  for (const { name, page } of pages) {
    await page.fill('#text', `hello from ${name}`);
    await page.click('#send');
  }
  // The chat canister broadcasts to everyone: each page must show both messages, its own and the other's.
  for (const { page } of pages) {
    for (const { name } of pages) {
      await page.waitForSelector(`#messages li:has-text("${name}: hello from ${name}")`);
    }
  }
  for (const { name, page } of pages) {
    const state = await page.getAttribute('body', 'data-state');
    if (state !== 'open') throw new Error(`${name}: page state ${state}: ${await page.textContent('#status')}`);
  }
  mkdirSync(dirname(cfg.screenshot), { recursive: true });
  await pages[0].page.screenshot({ path: cfg.screenshot, fullPage: true });
  console.log('ok browser chat');
} finally {
  await browser.close();
}
