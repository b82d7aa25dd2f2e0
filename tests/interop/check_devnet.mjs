// Independent check of the icws_fast devnet with @dfinity/agent 2.x (run by test_dfinity_agent.py).
//
// Usage: node check_devnet.mjs '<json>', the JSON being the start-up line of an icws-devnet hosting echo_canister.py:
//   url        the devnet URL
//   root_key   the root key the devnet announced, hex (fetchRootKey must return exactly it)
//   canisters  {echo: id}: the echo canister (update shout(text) -> (text), update whoami() -> (principal),
//              query echo(text) -> (text))
// Every check prints "ok <name>" or "FAIL <name>: <reason>"; the exit code is the number of failures.
import { Certificate, HttpAgent, SignIdentity, lookupResultToBuffer, polling } from '@dfinity/agent';
import { IDL } from '@dfinity/candid';
import { DelegationChain, DelegationIdentity, Ed25519KeyIdentity } from '@dfinity/identity';
import { Principal } from '@dfinity/principal';

const cfg = JSON.parse(process.argv[2]);
const canisterId = Principal.fromText(cfg.canisters.echo);
const toHex = buf => Buffer.from(new Uint8Array(buf)).toString('hex');
const text = s => new TextEncoder().encode(s);

let failures = 0;
async function check(name, fn) {
  try {
    await fn();
    console.log(`ok ${name}`);
  } catch (err) {
    failures += 1;
    console.log(`FAIL ${name}: ${err && err.stack ? err.stack : err}`);
  }
}

function expectEqual(actual, expected, what) {
  if (actual !== expected) throw new Error(`${what}: got ${actual}, expected ${expected}`);
}

async function newAgent(identity, options = {}) {
  // shouldFetchRootKey: the devnet is not mainnet, so agent-js must fetch (and we compare) its key.
  return HttpAgent.create({ host: cfg.url, identity, shouldFetchRootKey: true, ...options });
}

// The reply of a certified request status, read from a certificate agent-js has verified itself.
async function certifiedReply(agent, certificateBytes, requestId) {
  const cert = await Certificate.create({ certificate: certificateBytes, rootKey: agent.rootKey, canisterId });
  const status = new TextDecoder().decode(lookupResultToBuffer(cert.lookup(['request_status', requestId, 'status'])));
  expectEqual(status, 'replied', 'request status');
  return lookupResultToBuffer(cert.lookup(['request_status', requestId, 'reply']));
}

async function updateV3(agent, method = 'shout', arg = IDL.encode([IDL.Text], ['hello'])) {
  const { requestId, response } = await agent.call(canisterId, { methodName: method, arg, callSync: true });
  expectEqual(response.status, 200, 'v3 call HTTP status');
  expectEqual(response.body.status, 'replied', 'v3 call answer status');
  return certifiedReply(agent, response.body.certificate, requestId);
}

async function updateV2(agent, method = 'shout', arg = IDL.encode([IDL.Text], ['hello'])) {
  const { requestId, response } = await agent.call(canisterId, { methodName: method, arg, callSync: false });
  expectEqual(response.status, 202, 'v2 call HTTP status');
  // pollForResponse reads request_status with read_state and verifies each certificate.
  const { reply } = await polling.pollForResponse(agent, canisterId, requestId, polling.defaultStrategy());
  return reply;
}

async function query(agent) {
  // verifyQuerySignatures is on by default: agent-js checks the node signature with keys it reads from the subnet.
  const answer = await agent.query(canisterId, { methodName: 'echo', arg: IDL.encode([IDL.Text], ['hello']) });
  expectEqual(answer.status, 'replied', 'query status');
  return answer.reply.arg;
}

const decodeText = reply => IDL.decode([IDL.Text], reply)[0];
const decodePrincipal = reply => IDL.decode([IDL.Principal], reply)[0].toText();

// Signs with a valid key but flips one bit of every signature.
class CorruptingIdentity extends SignIdentity {
  constructor(inner) {
    super();
    this.inner = inner;
  }
  getPublicKey() {
    return this.inner.getPublicKey();
  }
  async sign(blob) {
    const sig = new Uint8Array(await this.inner.sign(blob));
    sig[0] ^= 1;
    return sig;
  }
}

// The HTTP status inside an agent-js error (AgentCallError / AgentQueryError wrap the HTTP error).
function httpStatusOf(err) {
  for (let e = err, depth = 0; e && depth < 4; e = e.response ?? e.cause, depth += 1) {
    if (typeof e.status === 'number') return e.status;
  }
  return undefined;
}

// The replica must refuse the request outright with an HTTP 4xx, as the IC does for a bad signature.
async function expectRefused(fn, what) {
  let answer;
  try {
    answer = await fn();
  } catch (err) {
    const status = httpStatusOf(err);
    if (status === undefined || status < 400 || status >= 500) {
      throw new Error(`${what}: expected an HTTP 4xx refusal, got ${err && err.stack ? err.stack : err}`);
    }
    return;
  }
  throw new Error(`${what} was accepted: ${toHex(answer)}`);
}

const identity = Ed25519KeyIdentity.generate();
const agent = await newAgent(identity);

await check('fetchRootKey', async () => {
  expectEqual(toHex(agent.rootKey), cfg.root_key, 'root key');
});
await check('update call v3 (synchronous)', async () => {
  expectEqual(decodeText(await updateV3(agent)), 'HELLO', 'v3 reply');
  const caller = decodePrincipal(await updateV3(agent, 'whoami', IDL.encode([], [])));
  expectEqual(caller, identity.getPrincipal().toText(), 'caller');
});
await check('update call v2 + read_state polling', async () => {
  expectEqual(decodeText(await updateV2(agent)), 'HELLO', 'v2 reply');
});
await check('query with node signature verification', async () => {
  expectEqual(decodeText(await query(agent)), 'hello', 'query reply');
});
await check('read_state with certificate verification', async () => {
  const { certificate } = await agent.readState(canisterId, { paths: [[text('time')]] });
  const cert = await Certificate.create({ certificate, rootKey: agent.rootKey, canisterId });
  const time = lookupResultToBuffer(cert.lookup(['time']));
  if (!time || time.byteLength === 0) throw new Error('no /time in the certificate');
});
await check('delegation identity (update v3, update v2, query)', async () => {
  const root = Ed25519KeyIdentity.generate();
  const session = Ed25519KeyIdentity.generate();
  const chain = await DelegationChain.create(root, session.getPublicKey(), new Date(Date.now() + 10 * 60 * 1000), {
    targets: [canisterId],
  });
  const delegated = DelegationIdentity.fromDelegation(session, chain);
  expectEqual(delegated.getPrincipal().toText(), root.getPrincipal().toText(), 'delegated sender');
  const delegatedAgent = await newAgent(delegated);
  const whoami = IDL.encode([], []);
  expectEqual(decodePrincipal(await updateV3(delegatedAgent, 'whoami', whoami)), root.getPrincipal().toText(), 'v3');
  expectEqual(decodePrincipal(await updateV2(delegatedAgent, 'whoami', whoami)), root.getPrincipal().toText(), 'v2');
  expectEqual(decodeText(await query(delegatedAgent)), 'hello', 'query reply');
});
await check('corrupted signature is rejected', async () => {
  const bad = await newAgent(new CorruptingIdentity(Ed25519KeyIdentity.generate()), { retryTimes: 0 });
  await expectRefused(() => updateV3(bad), 'v3 call with a corrupted signature');
  await expectRefused(() => updateV2(bad), 'v2 call with a corrupted signature');
  await expectRefused(() => query(bad), 'query with a corrupted signature');
});

process.exit(failures);
