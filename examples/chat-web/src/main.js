// The chat page: an IcWebSocket to the chat canister, which broadcasts every message to everyone connected.
//
// config.json (written by whoever serves the page, e.g. `make run`) says where things are:
//   {"gateway_url": "ws://...", "ic_url": "http://...", "canister_id": "..."}
// The identity is a secp256k1 key made when the page loads and kept across reconnects, so the page knows its own
// messages: the canister stamps each with its sender's principal. The nickname (?name=... or random) prefixes
// each text. Each connection attempt is a new IcWebSocket session (the protocol has no resume); a lost one is
// retried with exponential back-off and jitter. After each open the page asks the canister for its latest
// messages (the `history` query) and merges them with what it shows by the id the canister assigns, so a late
// joiner sees what was said and nothing shows twice after a reconnect.
import { Actor, HttpAgent } from '@dfinity/agent';
import { IcWebSocket, createWsConfig, generateRandomIdentity } from 'ic-websocket-js';
import { idlFactory } from './chat_idl.js';
import { describeClose } from './close_reasons.js';

const RETRY_FIRST_S = 1;
const RETRY_MAX_S = 30;
// A session that lasted this long was healthy: the next failure starts the back-off from the beginning again.
const HEALTHY_SESSION_MS = 10_000;
const MAX_TEXT_LENGTH = 1000; // the chat canister refuses longer texts (and a refused message ends the session)
const MAX_NAME_LENGTH = 32;

const $ = id => document.getElementById(id);

function setStatus(text, state) {
  $('status').textContent = text;
  document.body.dataset.state = state; // tests wait for data-state="open"
}

// The shown messages, <li data-id> in id order; the ids are the canister's, so a message shows once.
const shownIds = new Set();

function show(message, ownPrincipal) {
  const id = String(message.id);
  if (shownIds.has(id)) return;
  shownIds.add(id);
  const item = document.createElement('li');
  item.dataset.id = id;
  const own = message.sender.toText() === ownPrincipal;
  if (own) item.classList.add('own');
  const time = new Date(Number(message.timestamp / 1_000_000n)).toLocaleTimeString();
  item.append(Object.assign(document.createElement('time'), { textContent: time }), ` ${message.text}`);
  if (own) item.append(Object.assign(document.createElement('span'), { className: 'you', textContent: 'you' }));
  // Usually the newest: walk back from the end past the messages with a greater id.
  const list = $('messages');
  let next = null;
  for (let prev = list.lastElementChild; prev && BigInt(prev.dataset.id) > message.id; ) {
    next = prev;
    prev = prev.previousElementSibling;
  }
  list.insertBefore(item, next);
  if (next === null) item.scrollIntoView({ block: 'end' });
}

class ChatConnection {
  constructor(config, identity, agent) {
    this.config = config;
    this.identity = identity;
    this.agent = agent;
    this.principal = identity.getPrincipal().toText();
    // The actor supplies the Candid interface to ic-websocket-js and runs the `history` query.
    this.actor = Actor.createActor(idlFactory, { agent, canisterId: config.canister_id });
    this.ws = null;
    this.failures = 0; // consecutive failed sessions, for the back-off
    this.retryTimer = null;
    this.countdown = null;
  }

  connect() {
    this.cancelRetry();
    setStatus('connecting…', 'connecting');
    document.body.dataset.history = 'loading'; // tests wait for "loaded" after each open
    const ws = new IcWebSocket(
      this.config.gateway_url,
      undefined,
      createWsConfig({
        canisterId: this.config.canister_id,
        canisterActor: this.actor,
        identity: this.identity,
        networkUrl: this.config.ic_url,
      }),
    );
    // ic-websocket-js fetches a local replica's root key without waiting for it, so its first certificate may be
    // checked against the mainnet key and refused: hand its agent the key the page fetched first.
    ws._httpAgent.rootKey = this.agent.rootKey;
    this.ws = ws;
    const session = { opened: false, openedAt: 0, error: '' };
    ws.onopen = () => {
      session.opened = true;
      session.openedAt = Date.now();
      setStatus(`connected as ${this.principal}`, 'open');
      $('send').disabled = false;
      $('text').focus();
      this.loadHistory(ws);
    };
    ws.onmessage = event => {
      // Live messages decode as the page's AppMessage, whose canister-set fields are opt.
      const { text, timestamp, id, sender } = event.data;
      if (id.length && sender.length) show({ text, timestamp, id: id[0], sender: sender[0] }, this.principal);
    };
    ws.onerror = event => {
      const error = String(event.error?.message ?? event.message ?? event.error ?? '');
      console.warn('chat connection error:', error);
      // The SDK reports what went wrong here, then closes with 4000: keep it for the close's words. A browser
      // WebSocket error event says nothing (the close code does), so the SDK's wrapper of it is not kept.
      if (!error.startsWith('WebSocket error')) session.error = error;
    };
    ws.onclose = event => {
      if (ws !== this.ws) return; // an old session's late event
      $('send').disabled = true;
      const { code, reason } = event;
      const words = describeClose({ code, reason, error: session.error, opened: session.opened });
      const detail = (reason || session.error).slice(0, 200);
      const raw = detail ? `${code}: ${detail}` : `${code}`;
      this.failures = session.opened && Date.now() - session.openedAt >= HEALTHY_SESSION_MS ? 1 : this.failures + 1;
      if (event.code === 4001) {
        setStatus(`Disconnected: ${words} (${raw}).`, 'closed');
        $('retry').hidden = false;
      } else {
        this.scheduleRetry(`Disconnected: ${words} (${raw}).`);
      }
    };
  }

  // The latest messages, merged with those shown; `ws` is the session that asked, which may have ended since.
  async loadHistory(ws) {
    let outcome = 'loaded';
    try {
      for (const message of await this.actor.history()) show(message, this.principal);
    } catch (err) {
      console.warn('chat history not loaded:', err);
      outcome = 'failed';
    }
    if (ws === this.ws) document.body.dataset.history = outcome;
  }

  // Exponential back-off with equal jitter: a gateway restart does not bring every page back at the same instant.
  scheduleRetry(why) {
    const ceiling = Math.min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (this.failures - 1));
    let remaining = Math.max(1, Math.round(ceiling / 2 + (Math.random() * ceiling) / 2));
    const tick = () => setStatus(`${why} Reconnecting in ${remaining} s…`, 'reconnecting');
    tick();
    $('retry').hidden = false;
    this.countdown = setInterval(() => {
      remaining -= 1;
      if (remaining > 0) tick();
    }, 1000);
    this.retryTimer = setTimeout(() => this.connect(), remaining * 1000);
  }

  cancelRetry() {
    clearTimeout(this.retryTimer);
    clearInterval(this.countdown);
    $('retry').hidden = true;
  }

  send(text) {
    this.ws.send({ text, timestamp: BigInt(Date.now()) * 1_000_000n, id: [], sender: [] });
  }
}

async function main() {
  const asked = new URLSearchParams(location.search).get('name');
  const name = (asked || `guest-${Math.floor(Math.random() * 1000)}`).slice(0, MAX_NAME_LENGTH);
  $('name').textContent = name;
  $('text').maxLength = MAX_TEXT_LENGTH - `${name}: `.length;
  const config = await (await fetch('config.json')).json();
  const identity = generateRandomIdentity();
  const agent = HttpAgent.createSync({ host: config.ic_url, identity });
  await agent.fetchRootKey();
  const chat = new ChatConnection(config, identity, agent);
  $('form').addEventListener('submit', event => {
    event.preventDefault();
    const text = $('text').value.trim();
    if (!text) return;
    chat.send(`${name}: ${text}`);
    $('text').value = '';
  });
  $('retry').addEventListener('click', () => chat.connect());
  // Back online: no reason to wait out the back-off.
  window.addEventListener('online', () => {
    if (document.body.dataset.state === 'reconnecting') chat.connect();
  });
  chat.connect();
}

// Before the first session (config.json, the replica's root key), a failure is retried by reloading the page.
main().catch(err => {
  setStatus(`Cannot start the chat: ${err}. Retrying in 5 s…`, 'error');
  setTimeout(() => location.reload(), 5000);
});
