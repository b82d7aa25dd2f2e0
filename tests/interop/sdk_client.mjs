// Shared by the Node checks that drive ic-websocket-js (this folder's check_ic_websocket.mjs and
// tests/wasm/check_motoko_js.mjs): the browser globals the SDK expects, one IcWebSocket with promise-based
// helpers, and a timeout helper. Importing it from another folder also gives that folder this folder's pinned
// npm packages, re-exported below.
import { Actor, HttpAgent } from '@dfinity/agent';
import { IDL } from '@dfinity/candid';
import { Ed25519KeyIdentity } from '@dfinity/identity';
import { IcWebSocket, createWsConfig, generateRandomIdentity } from 'ic-websocket-js';
import WebSocket from 'ws';

export { Actor, HttpAgent, IDL, Ed25519KeyIdentity, IcWebSocket, createWsConfig, generateRandomIdentity };

// The SDK expects browser globals: Node 20 has Event and MessageEvent but neither WebSocket nor ErrorEvent.
globalThis.WebSocket ??= WebSocket;
globalThis.ErrorEvent ??= class ErrorEvent extends Event {
  constructor(type, init = {}) {
    super(type);
    this.error = init.error;
    this.message = init.message ?? String(init.error);
  }
};

export const TIMEOUT_MS = 30_000;

// ic-websocket-js starts fetching a local replica's root key without waiting for it (`void fetchRootKey()` in
// its constructor), so on a loaded machine its first certificate can be checked against the built-in mainnet
// key and refused ("Signature verification failed"). The checks fetch each replica's key first
// (`await loadRootKey(url)`); SdkClient hands it to the SDK's agent before any message can arrive. It is the
// key the SDK's own fetch returns a moment later, so a foreign-key check still sees the foreign key.
const rootKeys = new Map();

export async function loadRootKey(url) {
  if (!rootKeys.has(url)) {
    const agent = await HttpAgent.create({ host: url, shouldFetchRootKey: true });
    rootKeys.set(url, agent.rootKey);
  }
  return rootKeys.get(url);
}

// One IcWebSocket with promise-based helpers: `opened`, `next()` (the next application message), `closed`;
// every SDK error is collected in `errors`.
export class SdkClient {
  constructor({ gatewayUrl, icUrl, canisterId, actor, identity = generateRandomIdentity(), extra = {} }) {
    this.identity = identity;
    this.errors = [];
    this.inbox = [];
    this.waiters = [];
    this.ws = new IcWebSocket(
      gatewayUrl,
      undefined,
      createWsConfig({ canisterId, canisterActor: actor, identity, networkUrl: icUrl, ...extra }),
    );
    const networkUrl = extra.networkUrl ?? icUrl;
    if (!rootKeys.has(networkUrl)) throw new Error(`call 'await loadRootKey(${JSON.stringify(networkUrl)})' first`);
    this.ws._httpAgent.rootKey = rootKeys.get(networkUrl);
    this.opened = new Promise(resolve => {
      this.ws.onopen = () => resolve();
    });
    this.closed = new Promise(resolve => {
      this.ws.onclose = event => resolve({ code: event.code, reason: String(event.reason) });
    });
    this.ws.onmessage = event => {
      const waiter = this.waiters.shift();
      if (waiter) waiter(event.data);
      else this.inbox.push(event.data);
    };
    this.ws.onerror = event => this.errors.push(String(event.error ?? event.message));
  }

  next() {
    if (this.inbox.length > 0) return Promise.resolve(this.inbox.shift());
    return new Promise(resolve => this.waiters.push(resolve));
  }

  principal() {
    return this.identity.getPrincipal();
  }

  assertNoErrors() {
    if (this.errors.length > 0) throw new Error(`SDK errors: ${this.errors.join('; ')}`);
  }
}

export function within(promise, what, ms = TIMEOUT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
