// The official JS client SDK (ic-websocket-js 0.5.x on @dfinity/agent 2.x) against icws-gateway + icws-devnet.
//
// Usage: node check_ic_websocket.mjs CHECK '<json>'; the JSON is what ws_stack.running_stack yields:
//   ic_url, root_key (hex DER), canisters {test, chat, quick}, gateway_url, ack_interval_ms (quick's ack cycle):
//   quick is the test canister with an ack / keep-alive cycle of seconds; foreign-root-key-refused also needs
//   other_ic_url, another devnet (another root key).
// The SDK verifies every certificate itself (it fetches the devnet's root key, as for any local replica), checks
// sequence numbers and the OpenMessage client key, answers acks with keep-alives, and closes with code 4000 on
// any of these errors; so every check also fails on an `onerror` call.
// Prints "ok CHECK" or "FAIL CHECK: reason"; the exit code is 0 only for "ok".
import readline from 'node:readline';
import {
  Actor,
  Ed25519KeyIdentity,
  HttpAgent,
  IcWebSocket,
  SdkClient,
  loadRootKey,
  TIMEOUT_MS,
  generateRandomIdentity,
  within,
} from './sdk_client.mjs';

const [checkName, cfgText] = process.argv.slice(2);
const cfg = JSON.parse(cfgText);

// The demo canisters' interface, as `dfx generate` would write it from their .did: the IC WebSocket entry
// points with `opt AppMessage` as the application message type, plus the test canister's debug methods.
const idlFactory = ({ IDL }) => {
  const ClientPrincipal = IDL.Principal;
  const ClientKey = IDL.Record({ client_principal: ClientPrincipal, client_nonce: IDL.Nat64 });
  const WebsocketMessage = IDL.Record({
    client_key: ClientKey,
    sequence_num: IDL.Nat64,
    timestamp: IDL.Nat64,
    is_service_message: IDL.Bool,
    content: IDL.Vec(IDL.Nat8),
  });
  const AppMessage = IDL.Record({ text: IDL.Text, timestamp: IDL.Nat64 });
  const Result = IDL.Variant({ Ok: IDL.Null, Err: IDL.Text });
  return IDL.Service({
    ws_open: IDL.Func([IDL.Record({ client_nonce: IDL.Nat64, gateway_principal: IDL.Principal })], [Result], []),
    ws_close: IDL.Func([IDL.Record({ client_key: ClientKey })], [Result], []),
    ws_message: IDL.Func([IDL.Record({ msg: WebsocketMessage }), IDL.Opt(AppMessage)], [Result], []),
    send: IDL.Func([ClientPrincipal, IDL.Vec(IDL.Nat8)], [Result], []),
    close: IDL.Func([ClientPrincipal], [Result], []),
  });
};

await loadRootKey(cfg.ic_url);
if (cfg.other_ic_url) await loadRootKey(cfg.other_ic_url);

async function actorFor(canisterId, identity = Ed25519KeyIdentity.generate()) {
  const agent = await HttpAgent.create({ host: cfg.ic_url, identity, shouldFetchRootKey: true });
  return Actor.createActor(idlFactory, { agent, canisterId });
}

// A client of this check's gateway and devnet.
class Client extends SdkClient {
  constructor(canisterId, actor, identity = generateRandomIdentity(), extra = {}) {
    super({ gatewayUrl: cfg.gateway_url, icUrl: cfg.ic_url, canisterId, actor, identity, extra });
  }

  send(text) {
    this.ws.send({ text, timestamp: 0n });
  }
}

function expectEqual(actual, expected, what) {
  if (actual !== expected) throw new Error(`${what}: got ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`);
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

// Open, get the canister's greeting, exchange `rounds` messages; the client stays open.
async function pingPong(client, label, rounds) {
  await within(client.opened, `${label}: open`);
  const greeting = await within(client.next(), `${label}: greeting`);
  expectEqual(greeting.text, 'ping', `${label}: greeting`);
  if (typeof greeting.timestamp !== 'bigint' || greeting.timestamp === 0n) {
    throw new Error(`${label}: greeting timestamp ${greeting.timestamp} is not the canister time`);
  }
  for (let i = 0; i < rounds; i += 1) {
    client.send(`${label}.${i}`);
    const reply = await within(client.next(), `${label}: reply ${i}`);
    expectEqual(reply.text, `${label}.${i} ping`, `${label}: reply`);
  }
  client.assertNoErrors();
}

async function closeFromClient(client, label) {
  client.ws.close();
  const { code } = await within(client.closed, `${label}: close`);
  expectEqual(code, 1000, `${label}: close code`);
  client.assertNoErrors();
}

// The canister forgets a client once the gateway has called ws_close: its debug `send` then answers Err.
async function waitUntilForgotten(actor, principal) {
  const deadline = Date.now() + TIMEOUT_MS;
  while (Date.now() < deadline) {
    if ('Err' in (await actor.send(principal, new Uint8Array([1])))) return;
    await sleep(100);
  }
  throw new Error(`the canister still lists ${principal.toText()} as connected`);
}

const test = cfg.canisters.test;
const chat = cfg.canisters.chat;

const checks = {
  // Secp256k1 (the SDK's generateRandomIdentity) and Ed25519 identities sign the relayed ws_open / ws_message.
  async 'open-send-receive'() {
    const actor = await actorFor(test);
    for (const [label, identity] of [
      ['secp256k1', generateRandomIdentity()],
      ['ed25519', Ed25519KeyIdentity.generate()],
    ]) {
      const client = new Client(test, actor, identity);
      await pingPong(client, label, 5);
      await closeFromClient(client, label);
    }
  },

  async 'fifty-clients'() {
    const actor = await actorFor(test);
    const clients = Array.from({ length: 50 }, () => new Client(test, actor));
    await Promise.all(clients.map((client, n) => pingPong(client, `c${n}`, 3)));
    await Promise.all(clients.map((client, n) => closeFromClient(client, `c${n}`)));
  },

  // Acks arrive every ack_interval_ms; the SDK answers each with a keep-alive. A missed keep-alive would make the
  // canister close the client (CloseMessage KeepAliveTimeout, an SDK error) and forget it (no more replies).
  async 'ack-keep-alive'() {
    const handle = IcWebSocket.prototype._handleAckMessageFromCanister;
    let acks = 0;
    IcWebSocket.prototype._handleAckMessageFromCanister = function countAck(content) {
      acks += 1;
      return handle.call(this, content);
    };
    const quick = cfg.canisters.quick;
    const actor = await actorFor(quick);
    const client = new Client(quick, actor, generateRandomIdentity(), { ackMessageIntervalMs: cfg.ack_interval_ms });
    await pingPong(client, 'before', 1);
    const deadline = Date.now() + 10 * cfg.ack_interval_ms + TIMEOUT_MS;
    while (acks < 4 && Date.now() < deadline) await sleep(100);
    if (acks < 4) throw new Error(`only ${acks} ack messages in ${10 * cfg.ack_interval_ms + TIMEOUT_MS} ms`);
    expectEqual(client.ws.isConnectionEstablished(), true, 'connected after the ack cycles');
    client.send('after');
    expectEqual((await within(client.next(), 'reply after the ack cycles')).text, 'after ping', 'reply');
    await closeFromClient(client, 'after');
  },

  async 'close-from-client'() {
    const actor = await actorFor(test);
    const client = new Client(test, actor);
    await pingPong(client, 'client-close', 1);
    await closeFromClient(client, 'client-close');
    await waitUntilForgotten(actor, client.principal());
  },

  // The canister closes the client (CloseMessage ClosedByApplication): the SDK closes with 4001, no error. The
  // same identity then reconnects (a new client nonce) and talks again.
  async 'close-from-canister-and-reconnect'() {
    const actor = await actorFor(test);
    const identity = generateRandomIdentity();
    const first = new Client(test, actor, identity);
    await pingPong(first, 'first', 1);
    const answer = await actor.close(identity.getPrincipal());
    if (!('Ok' in answer)) throw new Error(`close: ${JSON.stringify(answer)}`);
    const { code } = await within(first.closed, 'the close from the canister');
    expectEqual(code, 4001, 'close code');
    first.assertNoErrors();
    const again = new Client(test, actor, identity);
    await pingPong(again, 'again', 3);
    await closeFromClient(again, 'again');
  },

  // The gateway restarts under a connected client (driven by the test through stdin): the SDK sees the close,
  // and the same identity reconnects to the new gateway at the same URL.
  async 'gateway-restart'() {
    const actor = await actorFor(test);
    const identity = generateRandomIdentity();
    const before = new Client(test, actor, identity);
    await pingPong(before, 'before', 1);
    console.log('connected');
    const { code } = await within(before.closed, 'the close by the draining gateway');
    console.log(`closed ${code}`);
    for await (const line of readline.createInterface({ input: process.stdin })) {
      if (line === 'restarted') break;
    }
    const after = new Client(test, actor, identity);
    await pingPong(after, 'after', 2);
    await closeFromClient(after, 'after');
  },

  // Clients through a load balancer (tests/deploy/test_haproxy.py): cfg.clients of them open and the check prints
  // which gateway serves each ("connected P1 P2 ..."); the test kills one gateway and names it on stdin ("killed P").
  // Clients of the other gateways must be untouched (still open, still answered); those of the killed one see their
  // connection close and connect again with the same identity through the same URL, reaching another gateway.
  // Prints "after OUTCOME ..." (untouched or reconnected, per client) before closing them all.
  async 'behind-load-balancer'() {
    const actor = await actorFor(test);
    const gatewayOf = client => client.ws._gatewayPrincipal.toText();
    const clients = Array.from({ length: cfg.clients }, () => new Client(test, actor));
    await Promise.all(clients.map((client, n) => pingPong(client, `lb${n}`, 1)));
    console.log(`connected ${clients.map(gatewayOf).join(' ')}`);
    let killed = null;
    for await (const line of readline.createInterface({ input: process.stdin })) {
      if (line.startsWith('killed ')) {
        killed = line.slice('killed '.length);
        break;
      }
    }
    if (killed === null) throw new Error('stdin ended before the test named the killed gateway');
    const outcomes = await Promise.all(
      clients.map(async (client, n) => {
        const label = `lb${n}`;
        if (gatewayOf(client) !== killed) {
          expectEqual(client.ws.isConnectionEstablished(), true, `${label}: open on a surviving gateway`);
          client.send(`${label}.after`);
          expectEqual((await within(client.next(), `${label}: reply`)).text, `${label}.after ping`, `${label}: reply`);
          client.assertNoErrors();
          return [client, 'untouched'];
        }
        await within(client.closed, `${label}: the close of its gateway`);
        const again = new Client(test, actor, client.identity);
        await pingPong(again, `${label}.again`, 1);
        if (gatewayOf(again) === killed) throw new Error(`${label}: reconnected to the killed gateway`);
        return [again, 'reconnected'];
      }),
    );
    console.log(`after ${outcomes.map(([, outcome]) => outcome).join(' ')}`);
    await Promise.all(outcomes.map(([client], n) => closeFromClient(client, `lb${n}`)));
  },

  // The negative control: a client that takes its root key from another replica (cfg.other_ic_url, same canister
  // ids) must refuse the messages our devnet certified, so the checks above really rest on the SDK's verification.
  async 'foreign-root-key-refused'() {
    const actor = await actorFor(test);
    const client = new Client(test, actor, generateRandomIdentity(), { networkUrl: cfg.other_ic_url });
    const outcome = await within(
      Promise.race([client.opened.then(() => 'opened'), client.closed.then(() => 'closed')]),
      'the open to be refused',
    );
    expectEqual(outcome, 'closed', 'outcome');
    if (!client.errors.some(e => e.includes('Certificate validation failed'))) {
      throw new Error(`no certificate error, got: ${client.errors.join('; ') || 'none'}`);
    }
  },

  // The chat canister broadcasts: every client sees every message, its own included.
  async 'chat-broadcast'() {
    const actor = await actorFor(chat);
    const clients = [0, 1, 2].map(() => new Client(chat, actor));
    await Promise.all(clients.map((client, n) => within(client.opened, `chat ${n}: open`)));
    clients.forEach((client, n) => client.send(`from ${n}`));
    for (const [n, client] of clients.entries()) {
      const seen = [];
      for (let i = 0; i < clients.length; i += 1) seen.push((await within(client.next(), `chat ${n}: message`)).text);
      expectEqual(seen.sort().join('|'), 'from 0|from 1|from 2', `chat ${n}: messages`);
    }
    await Promise.all(clients.map((client, n) => closeFromClient(client, `chat ${n}`)));
  },
};

const check = checks[checkName];
if (!check) {
  console.log(`FAIL ${checkName}: no such check (known: ${Object.keys(checks).join(', ')})`);
  process.exit(2);
}
try {
  await check();
  console.log(`ok ${checkName}`);
  process.exit(0);
} catch (err) {
  console.log(`FAIL ${checkName}: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
}
