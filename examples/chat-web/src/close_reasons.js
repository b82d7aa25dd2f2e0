// Plain words for the ways a chat session ends: the gateway's close codes and reasons (icws_fast.protocol.session,
// table in docs/api.md "Close codes") and ic-websocket-js's own, which reports an error and then closes with 4000
// (the gateway echoes the code without the reason, so the words come from the error the SDK reported).

const SDK_ERRORS = [
  ['Message sending failed', 'the canister rejected a message'],
  ['Ack message timeout', 'the canister stopped acknowledging your messages'],
  ['Ack message error', "the canister's acknowledgement did not match what was sent"],
  ['Keep alive message was not sent', 'the keep-alive message could not be sent'],
  ['Open timeout expired', 'the canister did not confirm the connection in time'],
  [
    'Received close message from canister',
    'the canister closed the connection (a missed keep-alive or a lost message)',
  ],
  ['Error receiving message', 'a message from the gateway failed verification'],
];

const POLICY_REASONS = [
  ['slow consumer', 'your connection was too slow to keep up with the chat'],
  ['too many requests waiting', 'you sent messages faster than the IC could take them'],
  ['this client key is already connected', 'this identity is already connected'],
  ['no ws_open message in time', 'the page did not open its session in time'],
  ['this gateway does not serve', 'this gateway does not serve the chat canister'],
];

// 1011 "ws_open failed: <outcome>" / "ws_message failed: <outcome>" (the gateway relayed the page's call and the IC
// did not take it; outcomes as in docs/operations.md "Relay outcomes"), "internal error", or the poller's failure.
function describeRelayFailure(reason) {
  const relayed = /^ws_(open|message) failed: (\w+)/.exec(reason);
  if (relayed === null) {
    if (reason === 'internal error') return 'the gateway hit an internal error';
    return 'the gateway lost contact with the chat canister'; // its poller failed
  }
  const [, method, outcome] = relayed;
  if (outcome === 'transient') return 'the gateway could not reach the IC';
  if (outcome === 'invalid') return 'the IC refused what the page sent';
  return method === 'open' ? 'the chat canister refused the connection' : 'the canister rejected a message';
}

function startsWithAny(text, table, otherwise) {
  const found = table.find(([prefix]) => text.startsWith(prefix));
  return found === undefined ? otherwise : found[1];
}

/**
 * What happened, in words a chat user understands.
 * @param {{code: number, reason: string, error: string, opened: boolean}} close the CloseEvent's code and reason,
 *   the last error the SDK reported for this session ('' if none), and whether the session had opened.
 */
export function describeClose({ code, reason, error, opened }) {
  switch (code) {
    case 1000:
      return 'the connection was closed';
    case 1001:
      return 'the gateway restarted or is shutting down';
    case 1006:
      return opened ? 'the connection to the gateway dropped' : 'cannot reach the gateway';
    case 1008:
      return startsWithAny(reason, POLICY_REASONS, 'the gateway refused what the page sent');
    case 1009:
      return 'a message was too big for the gateway';
    case 1011:
      return describeRelayFailure(reason);
    case 1013:
      return reason.includes('shutting down') ? 'the gateway restarted or is shutting down' : 'the gateway is full';
    case 4000:
      return startsWithAny(error, SDK_ERRORS, 'the page and the gateway disagreed on the protocol');
    case 4001:
      return 'the chat canister closed your connection';
    default:
      return 'the connection closed unexpectedly';
  }
}
