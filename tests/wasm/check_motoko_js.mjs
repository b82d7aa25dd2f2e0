// The official JS client SDK (ic-websocket-js, the npm packages pinned in tests/interop) against the official
// Motoko CDK test canister running as WebAssembly on icws-devnet, through icws-gateway.
//
// Usage: node check_motoko_js.mjs '<json>' with ic_url, canister_id, gateway_urls (two gateways).
// The canister does not answer messages: the check drives it with its `send` and `close` methods. The SDK
// verifies every certificate, sequence number and the OpenMessage itself and reports any failure through
// `onerror`, so every step also fails on an SDK error. Prints "ok" or "FAIL: reason"; exit code 0 only for "ok".
//
// The helpers and the pinned npm packages of tests/interop.
import {
  Actor,
  Ed25519KeyIdentity,
  HttpAgent,
  IDL,
  SdkClient,
  loadRootKey,
  within,
} from '../interop/sdk_client.mjs';

const cfg = JSON.parse(process.argv[2]);
const AppMessage = IDL.Record({ text: IDL.Text });

// The canister's interface (ic_websocket_cdk_mo_test_canister.did), as `dfx generate` would write it.
const idlFactory = ({ IDL }) => {
  const ClientKey = IDL.Record({ client_principal: IDL.Principal, client_nonce: IDL.Nat64 });
  const WebsocketMessage = IDL.Record({
    client_key: ClientKey,
    sequence_num: IDL.Nat64,
    timestamp: IDL.Nat64,
    is_service_message: IDL.Bool,
    content: IDL.Vec(IDL.Nat8),
  });
  const Result = IDL.Variant({ Ok: IDL.Null, Err: IDL.Text });
  return IDL.Service({
    ws_open: IDL.Func([IDL.Record({ client_nonce: IDL.Nat64, gateway_principal: IDL.Principal })], [Result], []),
    ws_close: IDL.Func([IDL.Record({ client_key: ClientKey })], [Result], []),
    ws_message: IDL.Func([IDL.Record({ msg: WebsocketMessage }), IDL.Opt(IDL.Record({ text: IDL.Text }))], [Result], []),
    send: IDL.Func([IDL.Principal, IDL.Vec(IDL.Vec(IDL.Nat8))], [Result], []),
    close: IDL.Func([IDL.Principal], [Result], []),
  });
};

await loadRootKey(cfg.ic_url);
const agent = await HttpAgent.create({ host: cfg.ic_url, identity: Ed25519KeyIdentity.generate(), shouldFetchRootKey: true });
const actor = Actor.createActor(idlFactory, { agent, canisterId: cfg.canister_id });

function expectEqual(actual, expected, what) {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new Error(`${what}: got ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`);
  }
}

class Client extends SdkClient {
  constructor(gatewayUrl) {
    super({ gatewayUrl, icUrl: cfg.ic_url, canisterId: cfg.canister_id, actor });
  }

  nextWithin(what) {
    return within(this.next(), what);
  }

  // Messages sent by the canister (its `send` method) to this client.
  async sendFromCanister(...texts) {
    const blobs = texts.map(text => new Uint8Array(IDL.encode([AppMessage], [{ text }])));
    expectEqual(await actor.send(this.identity.getPrincipal(), blobs), { Ok: null }, 'send');
  }
}

async function main() {
  // Open through the first gateway; messages both ways; a backlog delivered in batches of 3.
  const first = new Client(cfg.gateway_urls[0]);
  await within(first.opened, 'open');
  await first.sendFromCanister('hello', 'world');
  expectEqual((await first.nextWithin('hello')).text, 'hello', 'first message');
  expectEqual((await first.nextWithin('world')).text, 'world', 'second message');
  for (let i = 0; i < 5; i += 1) first.ws.send({ text: `from js ${i}` });
  const backlog = Array.from({ length: 10 }, (_, i) => `backlog ${i}`);
  await first.sendFromCanister(...backlog);
  for (const text of backlog) expectEqual((await first.nextWithin(text)).text, text, 'backlog order');
  first.assertNoErrors();

  // A second client on the second gateway.
  const second = new Client(cfg.gateway_urls[1]);
  await within(second.opened, 'open on the second gateway');
  await second.sendFromCanister('to the second');
  expectEqual((await second.nextWithin('second gateway message')).text, 'to the second', 'second gateway');
  second.assertNoErrors();

  // Close from the client: the SDK closes normally.
  first.ws.close();
  expectEqual((await within(first.closed, 'close from the client')).code, 1000, 'close code');
  first.assertNoErrors();

  // Close from the canister: the client is closed.
  expectEqual(await actor.close(second.identity.getPrincipal()), { Ok: null }, 'close');
  await within(second.closed, 'close from the canister');
}

main().then(
  () => {
    console.log('ok');
    process.exit(0);
  },
  error => {
    console.log(`FAIL: ${error.stack ?? error}`);
    process.exit(1);
  },
);
