// The chat page: one IcWebSocket to the chat canister, which broadcasts every message to everyone connected.
//
// config.json (written by whoever serves the page, e.g. `make run`) says where things are:
//   {"gateway_url": "ws://...", "ic_url": "http://...", "canister_id": "..."}
// The identity is a fresh secp256k1 key per page load; the nickname (?name=... or random) prefixes each text.
import { Actor, HttpAgent } from '@dfinity/agent';
import { IcWebSocket, createWsConfig, generateRandomIdentity } from 'ic-websocket-js';
import { idlFactory } from './chat_idl.js';

const $ = id => document.getElementById(id);

function setStatus(text, state) {
  $('status').textContent = text;
  document.body.dataset.state = state; // tests wait for data-state="open"
}

function show(text, timestamp) {
  const item = document.createElement('li');
  const time = new Date(Number(timestamp / 1_000_000n)).toLocaleTimeString();
  item.append(Object.assign(document.createElement('time'), { textContent: time }), ` ${text}`);
  $('messages').append(item);
  item.scrollIntoView({ block: 'end' });
}

async function main() {
  const config = await (await fetch('config.json')).json();
  const name = new URLSearchParams(location.search).get('name') || `guest-${Math.floor(Math.random() * 1000)}`;
  $('name').textContent = name;
  const identity = generateRandomIdentity();
  // The actor only supplies the Candid interface: ic-websocket-js signs and sends the calls itself.
  const agent = HttpAgent.createSync({ host: config.ic_url, identity });
  // ic-websocket-js fetches a local replica's root key without waiting for it, so its first certificate may be
  // checked against the mainnet key and refused: fetch the key first and hand it to the SDK's agent.
  await agent.fetchRootKey();
  const canisterActor = Actor.createActor(idlFactory, { agent, canisterId: config.canister_id });
  const ws = new IcWebSocket(
    config.gateway_url,
    undefined,
    createWsConfig({ canisterId: config.canister_id, canisterActor, identity, networkUrl: config.ic_url }),
  );
  ws._httpAgent.rootKey = agent.rootKey;
  ws.onopen = () => {
    setStatus(`connected as ${identity.getPrincipal().toText()}`, 'open');
    $('send').disabled = false;
    $('text').focus();
  };
  ws.onmessage = event => show(event.data.text, event.data.timestamp);
  ws.onerror = event => setStatus(`error: ${event.error ?? event.message}`, 'error');
  ws.onclose = event => {
    setStatus(`closed (${event.code})`, 'closed');
    $('send').disabled = true;
  };
  $('form').addEventListener('submit', event => {
    event.preventDefault();
    const text = $('text').value.trim();
    if (!text) return;
    ws.send({ text: `${name}: ${text}`, timestamp: BigInt(Date.now()) * 1_000_000n });
    $('text').value = '';
  });
}

main().catch(err => setStatus(`error: ${err}`, 'error'));
