// @dfinity/candid's side of the Candid cross-check (run by test_candid_cross.py).
//
// Reads a JSON array on stdin: [{case, value, hex}], `value` being the arguments in the JSON form below and `hex`
// what icws_fast.ic.candid encoded for them. For each it writes {hex, value}: @dfinity/candid's encoding of `value`
// and its decoding of the input `hex`, back in JSON form. JSON form: nat64 as a decimal string, blob as hex,
// principal as text, opt as [] or [x], record as an object, variant as a one-key object, null as null.
import { IDL } from '@dfinity/candid';
import { Principal } from '@dfinity/principal';

// The IC WebSocket types, written from the CDK's ws_types.did and service_messages.did (as ic-websocket-js does).
const ClientKey = IDL.Record({ client_principal: IDL.Principal, client_nonce: IDL.Nat64 });
const WebsocketMessage = IDL.Record({
  client_key: ClientKey,
  sequence_num: IDL.Nat64,
  timestamp: IDL.Nat64,
  is_service_message: IDL.Bool,
  content: IDL.Vec(IDL.Nat8),
});
const CanisterOutputMessage = IDL.Record({ client_key: ClientKey, key: IDL.Text, content: IDL.Vec(IDL.Nat8) });
const CanisterOutputCertifiedMessages = IDL.Record({
  messages: IDL.Vec(CanisterOutputMessage),
  cert: IDL.Vec(IDL.Nat8),
  tree: IDL.Vec(IDL.Nat8),
  is_end_of_queue: IDL.Bool,
});
const UnitResult = IDL.Variant({ Ok: IDL.Null, Err: IDL.Text });
const CloseMessageReason = IDL.Variant({
  WrongSequenceNumber: IDL.Null,
  InvalidServiceMessage: IDL.Null,
  KeepAliveTimeout: IDL.Null,
  ClosedByApplication: IDL.Null,
});
const LastIncoming = IDL.Record({ last_incoming_sequence_num: IDL.Nat64 });
const WebsocketServiceMessageContent = IDL.Variant({
  OpenMessage: IDL.Record({ client_key: ClientKey }),
  AckMessage: LastIncoming,
  KeepAliveMessage: LastIncoming,
  CloseMessage: IDL.Record({ reason: CloseMessageReason }),
});
const AppMessage = IDL.Record({ text: IDL.Text, timestamp: IDL.Nat64 });
const CanisterWsMessageArguments = IDL.Record({ msg: WebsocketMessage });

// Argument lists, by the names test_candid_cross.py uses.
const CASES = {
  ClientKey: [ClientKey],
  WebsocketMessage: [WebsocketMessage],
  CanisterOutputMessage: [CanisterOutputMessage],
  CanisterWsOpenArguments: [IDL.Record({ client_nonce: IDL.Nat64, gateway_principal: IDL.Principal })],
  CanisterWsOpenResult: [UnitResult],
  CanisterWsCloseArguments: [IDL.Record({ client_key: ClientKey })],
  CanisterWsMessageArguments: [CanisterWsMessageArguments],
  CanisterWsGetMessagesArguments: [IDL.Record({ nonce: IDL.Nat64 })],
  CanisterWsGetMessagesResult: [IDL.Variant({ Ok: CanisterOutputCertifiedMessages, Err: IDL.Text })],
  WebsocketServiceMessageContent: [WebsocketServiceMessageContent],
  AppMessage: [AppMessage],
  ws_message: [CanisterWsMessageArguments, IDL.Opt(AppMessage)],
};

const toHex = bytes => Buffer.from(bytes).toString('hex');

function fromJson(t, v) {
  if (t instanceof IDL.RecordClass) return Object.fromEntries(t._fields.map(([k, ft]) => [k, fromJson(ft, v[k])]));
  if (t instanceof IDL.VariantClass) {
    const [[k, inner]] = Object.entries(v);
    return { [k]: fromJson(t._fields.find(([name]) => name === k)[1], inner) };
  }
  if (t instanceof IDL.OptClass) return v.map(x => fromJson(t._type, x));
  if (t instanceof IDL.VecClass) {
    return t._type instanceof IDL.FixedNatClass && t._type._bits === 8
      ? Uint8Array.from(Buffer.from(v, 'hex'))
      : v.map(x => fromJson(t._type, x));
  }
  if (t instanceof IDL.FixedNatClass) return BigInt(v);
  if (t instanceof IDL.PrincipalClass) return Principal.fromText(v);
  return v; // text, bool, null
}

function toJson(t, v) {
  if (t instanceof IDL.RecordClass) return Object.fromEntries(t._fields.map(([k, ft]) => [k, toJson(ft, v[k])]));
  if (t instanceof IDL.VariantClass) {
    const [[k, inner]] = Object.entries(v);
    return { [k]: toJson(t._fields.find(([name]) => name === k)[1], inner) };
  }
  if (t instanceof IDL.OptClass) return v.map(x => toJson(t._type, x));
  if (t instanceof IDL.VecClass) {
    return t._type instanceof IDL.FixedNatClass && t._type._bits === 8
      ? toHex(Uint8Array.from(v))
      : v.map(x => toJson(t._type, x));
  }
  if (t instanceof IDL.FixedNatClass) return v.toString();
  if (t instanceof IDL.PrincipalClass) return v.toText();
  return v;
}

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const results = JSON.parse(Buffer.concat(chunks).toString('utf8')).map(({ case: name, value, hex }) => {
  const types = CASES[name];
  if (!types) throw new Error(`unknown case ${name}`);
  const encoded = IDL.encode(types, types.map((t, i) => fromJson(t, value[i])));
  const decoded = IDL.decode(types, Uint8Array.from(Buffer.from(hex, 'hex')));
  return { hex: toHex(new Uint8Array(encoded)), value: types.map((t, i) => toJson(t, decoded[i])) };
});
process.stdout.write(JSON.stringify(results));
