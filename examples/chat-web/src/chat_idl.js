// The chat canister's Candid interface (what `dfx generate` would write from its .did): the IC WebSocket entry
// points, with `opt AppMessage` as ws_message's second argument, which tells ic-websocket-js the message type it
// sends and receives, and the `history` query.
//
// The canister takes `record { text; timestamp }` and broadcasts that record plus the `id` it assigns and the
// `sender`. The page's AppMessage has both as `opt`: sent as null (the canister ignores them), received as set.
export const idlFactory = ({ IDL }) => {
  const ClientKey = IDL.Record({ client_principal: IDL.Principal, client_nonce: IDL.Nat64 });
  const WebsocketMessage = IDL.Record({
    client_key: ClientKey,
    sequence_num: IDL.Nat64,
    timestamp: IDL.Nat64,
    is_service_message: IDL.Bool,
    content: IDL.Vec(IDL.Nat8),
  });
  const AppMessage = IDL.Record({
    text: IDL.Text,
    timestamp: IDL.Nat64,
    id: IDL.Opt(IDL.Nat64),
    sender: IDL.Opt(IDL.Principal),
  });
  const ChatMessage = IDL.Record({ text: IDL.Text, timestamp: IDL.Nat64, id: IDL.Nat64, sender: IDL.Principal });
  const Result = IDL.Variant({ Ok: IDL.Null, Err: IDL.Text });
  return IDL.Service({
    ws_open: IDL.Func([IDL.Record({ client_nonce: IDL.Nat64, gateway_principal: IDL.Principal })], [Result], []),
    ws_close: IDL.Func([IDL.Record({ client_key: ClientKey })], [Result], []),
    ws_message: IDL.Func([IDL.Record({ msg: WebsocketMessage }), IDL.Opt(AppMessage)], [Result], []),
    history: IDL.Func([], [IDL.Vec(ChatMessage)], ['query']),
  });
};
